"""benchmarks/gpu_check.py at CPU shapes, so that the one command that checks every CUDA path
cannot rot: every row prints, GPU-only rows are marked, none fails."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_every_row_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    gpu_check.main(["--device", "cpu"])
    out = capsys.readouterr().out
    rows = {line.split()[0] + (" " + line.split()[1] if line.split()[0] in ("step", "precision")
                               else "") for line in out.splitlines()[1:]}
    assert rows == {*(f"step {a}" for a in gpu_check.ARCHS), "precision 32",
                    "precision 16-mixed", "precision bf16-mixed", "live", "pack", "8bit"}
    assert "FAILED" not in out and out.count(gpu_check.GPU_ONLY) == 2
    assert "sparse" in out and "FVU" in out and "(plan " in out
