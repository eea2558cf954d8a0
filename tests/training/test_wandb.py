"""`loggers: [tensorboard, wandb]` with WANDB_MODE=offline: the run's files hold the config, the
curves and the final metrics; a resumed run continues the same W&B run."""

from __future__ import annotations

import pytest
from helpers.train_config import tiny
from helpers.wandb_files import read_run

from sae_lab.training.run import WANDB_ID_FILE, train

pytest.importorskip("wandb")


@pytest.mark.slow
def test_wandb_offline_run_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    cfg = tiny(tmp_path, loggers=["tensorboard", "wandb"])
    cfg = type(cfg).from_dict({**cfg.to_dict(),
                               "wandb": {"project": "p", "group": "g", "tags": ["t1"]}})
    result = train(cfg, progress_lines=False)
    run_id = (result.out_dir / WANDB_ID_FILE).read_text().strip()
    runs = list((result.out_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1
    run = read_run(runs[0] / f"run-{run_id}.wandb")
    assert run["config"]["sae"]["architecture"] == "topk"
    assert run["config"]["batch_size"] == 256
    assert run["summary"]["final/fvu"] == pytest.approx(result.metrics["fvu"])
    logged = {k for row in run["history"] for k in row}
    assert {"val/fvu", "train/loss"} <= logged
    assert (result.out_dir / "tensorboard").is_dir()
