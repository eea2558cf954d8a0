"""notebooks/quickstart.ipynb: committed without outputs, and executed end to end (harvest,
train, sweep, Pareto plot, inspect, steer) with small settings in a kernel of this Python."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from sae_lab.demo import TINY_SWEEP

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
SMALL = f"""# test settings (inserted after the parameters cell)
TOKENS = 8192
SHARD_ROWS = 2048
TRAIN_TOKENS = 8192
SWEEP_OVERRIDES = {TINY_SWEEP!r}
LM_TOKENS = 4096
"""


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) - 1  # prose between steps


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernelspec for the Python running the tests, whatever other kernels are installed."""
    spec = tmp_path / "jupyter" / "kernels" / "sae-lab-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "sae-lab test", "language": "python",
        "env": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"},
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "sae-lab-test"


@pytest.mark.slow
def test_runs_end_to_end(tmp_path, kernel_name):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(SMALL))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    NotebookClient(nb, kernel_name=kernel_name, timeout=600,
                   resources={"metadata": {"path": str(run_dir)}}).execute()

    def text(i: int) -> str:
        return "".join(o.get("text", "") for o in nb.cells[i].outputs if o.output_type == "stream")

    outputs = "\n".join(text(i) for i, c in enumerate(nb.cells) if c.cell_type == "code")
    out = run_dir / "runs" / "quickstart"
    assert "'tokens': 8192" in outputs and "latents per token: 32.0 of 3072" in outputs
    assert (out / "topk" / "final" / "cfg.json").is_file()
    from sae_lab.sweep.schema import load_sweep

    for arch in load_sweep("demo.yaml").architectures:
        assert (out / "sweep" / "best" / arch).is_dir()
        assert (out / "exports" / arch / "cfg.json").is_file()
    assert (out / "browser" / "index.html").is_file()
    plots = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if "image/png" in o.get("data", {})]
    assert len(plots) == 1  # the Pareto plot
    assert "frontier: [(" in outputs
    assert "top latents over the text:" in outputs and "'header'" in outputs
    assert "##" not in outputs  # contexts and features read as text
    assert "| steered (0:+20; every position)" in outputs
    assert "| steered (all:x0.5, 0:+20; every position; splice drop-error)" in outputs
    corr = float(outputs.split("direct effect: ")[1].split()[0])
    assert corr > 0.5
    for c in nb.cells:  # where the time goes, for `pytest -s`
        t = c.metadata.get("execution", {})
        if "iopub.execute_input" in t:
            print(f"{t['iopub.execute_input'][11:19]} .. {t['shell.execute_reply'][11:19]}  "
                  f"{c.source.splitlines()[0][:60]}")
