"""`loggers: [tensorboard, wandb]` with WANDB_MODE=offline: the run's files hold the config, the
curves and the final metrics, for train() and for each member of a pack; a resumed pack continues
each member's W&B run; a finished sweep logs its Pareto plot and results table to a summary run."""

from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import yaml
from helpers.train_config import tiny
from helpers.wandb_files import read_run

from sae_lab.training.config import TrainConfig
from sae_lab.training.pack import train_pack
from sae_lab.training.run import train
from sae_lab.training.wandb_runs import WANDB_ID_FILE

pytest.importorskip("wandb")


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def runs_of(out_dir):
    """The offline runs under out_dir/wandb (oldest first) and the id kept in out_dir."""
    run_id = (out_dir / WANDB_ID_FILE).read_text().strip()
    dirs = sorted((out_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    return run_id, [read_run(d / f"run-{run_id}.wandb") for d in dirs]


@pytest.mark.slow
def test_wandb_offline_run_files(tmp_path, offline_wandb):
    cfg = tiny(tmp_path, loggers=["tensorboard", "wandb"])
    cfg = type(cfg).from_dict({**cfg.to_dict(),
                               "wandb": {"project": "p", "group": "g", "tags": ["t1"]}})
    result = train(cfg, progress_lines=False)
    _, runs = runs_of(result.out_dir)
    assert len(runs) == 1
    run = runs[0]
    assert run["config"]["sae"]["architecture"] == "topk"
    assert run["config"]["batch_size"] == 256
    assert run["summary"]["final/fvu"] == pytest.approx(result.metrics["fvu"])
    logged = {k for row in run["history"] for k in row}
    assert {"val/fvu", "train/loss"} <= logged
    assert (result.out_dir / "tensorboard").is_dir()


PACK = {"data": {"synthetic": {"d": 8, "n_features": 16, "active": 2, "n_tokens": 2048}},
        "batch_size": 64, "max_tokens": 64 * 8, "val_every_steps": 4, "val_batches": 1,
        "log_every_steps": 2, "progress_bar": False, "loggers": ["wandb"],
        "wandb": {"project": "p", "group": "sweep-x"}}
MEMBERS = {"relu_000": {"architecture": "relu", "expansion_factor": 2},
           "topk_001": {"architecture": "topk", "k": 2, "expansion_factor": 3}}


class Crash(pl.Callback):
    """The pack's process dies after step 6 (its last checkpoint: the validation at step 4)."""

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step == 6:
            raise RuntimeError("killed")


def test_pack_members_are_wandb_runs_continued_on_resume(tmp_path, offline_wandb):
    cfgs = [TrainConfig.from_dict({**yaml.safe_load(yaml.safe_dump(PACK)), "sae": sae,
                                   "out_dir": str(tmp_path / name)})
            for name, sae in MEMBERS.items()]
    out = tmp_path / "pack"
    with pytest.raises(RuntimeError, match="killed"):
        train_pack(cfgs, list(MEMBERS), out, callbacks=[Crash()])
    first_ids = {n: (out / "members" / n / WANDB_ID_FILE).read_text() for n in MEMBERS}
    # a resumed sweep's pack works in a new folder: the ids come from its checkpoint
    resumed_out = tmp_path / "resumed"
    results = train_pack(cfgs, list(MEMBERS), resumed_out,
                         ckpt_path=out / "checkpoints" / "last.ckpt",
                         wandb_ids={n: i.strip() for n, i in first_ids.items()})
    assert len(set(first_ids.values())) == 2
    for r, (name, sae) in zip(results, MEMBERS.items(), strict=True):
        run_id, (crashed,) = runs_of(out / "members" / name)
        resumed_id, (resumed,) = runs_of(resumed_out / "members" / name)
        assert run_id == resumed_id == first_ids[name].strip()
        for run in (crashed, resumed):
            assert run["run"]["group"] == "sweep-x" and run["run"]["name"] == name
            assert run["config"]["sae"]["architecture"] == sae["architecture"]
            assert run["config"]["batch_size"] == 64
        steps = lambda run, key: [row["trainer/global_step"] for row in run["history"]  # noqa: E731
                                  if key in row]
        assert steps(crashed, "val/fvu") == [4] and steps(resumed, "val/fvu") == [8]
        assert steps(crashed, "train/loss") == [0, 2, 4]
        assert steps(resumed, "train/loss") == [4, 6]  # from the checkpoint at step 4 on
        assert "final/fvu" not in crashed["summary"]
        assert resumed["summary"]["final/fvu"] == pytest.approx(r.metrics["fvu"])
        assert resumed["summary"]["final/status"] == "done"
        assert not (resumed_out / "members" / name / "tensorboard").exists()  # not in loggers


def test_sweep_summary_run_holds_pareto_plot_and_results_table(tmp_path, offline_wandb):
    from PIL import Image

    from sae_lab.sweep.report import SweepResult, TrialRecord
    from sae_lab.sweep.schema import sweep_from_dict
    from sae_lab.sweep.tracking import log_summary

    sweep = sweep_from_dict({"name": "sw", "base": {**PACK, "wandb": {"project": "p"}},
                             "architectures": ["topk"], "space": {"topk": {"k": {"grid": [2, 4]}}},
                             "search": "grid"})
    trials = [TrialRecord(trial=f"topk_{k}", architecture="topk", config={"k": k},
                          metrics={"objective": 0.5 / k, "l0": k, "fvu": 0.5 / k},
                          status="done") for k in (2, 4)]
    trials.append(TrialRecord(trial="topk_9", architecture="topk", config={"k": 9},
                              status="failed", error="boom"))
    Image.new("RGB", (8, 6), "red").save(tmp_path / "pareto.png")
    run_id = log_summary(SweepResult(trials, out=tmp_path), sweep, tmp_path)
    assert run_id == (tmp_path / WANDB_ID_FILE).read_text().strip()
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    run = read_run(run_dir / f"run-{run_id}.wandb")
    assert run["run"] == {"id": run_id, "group": "sw", "name": "sw-summary",
                          "job_type": "sweep-summary"}
    assert run["config"]["space"] == {"topk": {"k": {"grid": [2, 4]}}}
    (logged,) = [row for row in run["history"] if "results/path" in row]  # media: nested keys
    assert logged["pareto/_type"] == "image-file" and logged["pareto/width"] == 8
    assert (run_dir / "files" / logged["pareto/path"]).is_file()
    table = json.loads((run_dir / "files" / logged["results/path"]).read_text())
    rows = {r[table["columns"].index("trial")]: dict(zip(table["columns"], r, strict=True))
            for r in table["data"]}
    assert rows["topk_4"]["fvu"] == 0.125 and rows["topk_4"]["status"] == "done"
    assert rows["topk_9"]["error"] == "boom" and rows["topk_9"]["fvu"] is None
    assert run["summary"]["final/best_trial"] == "topk_4"
    assert run["summary"]["final/done"] == 2 and run["summary"]["final/failed"] == 1
