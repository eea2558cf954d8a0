"""The throughput benchmark still runs end to end (tiny shapes; its figures are not checked)."""

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.mark.slow
def test_train_throughput_benchmark_runs(capsys):
    spec = importlib.util.spec_from_file_location("train_throughput", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--d-in", "16", "--d-sae", "128", "--k", "4", "--batch", "64", "--steps", "2",
                "--skip-architectures", "--device", "cpu"])
    out = capsys.readouterr().out
    for row in ("plain PyTorch TopK (reference)", "sae_lab topk dense", "sae_lab topk sparse",
                "sae_lab batchtopk sparse", "full Lightning path"):
        line = next(line for line in out.splitlines() if row in line)
        tokens_per_s, ratio = re.search(r"([\d,]+)\s+([\d.]+)x", line).groups()
        assert float(tokens_per_s.replace(",", "")) > 0 and float(ratio) > 0
