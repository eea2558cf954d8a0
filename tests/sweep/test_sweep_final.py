"""The figure a sweep ranks a trial on comes from the whole held-out set (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from sae_lab.sweep import run as sweep_run
from sae_lab.training.config import TrainConfig
from sae_lab.training.run import TrainResult, evaluate_rows, make_datamodule, train

CFG = {
    "sae": {"architecture": "topk", "k": 4, "expansion_factor": 4},
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 8192}},
    "batch_size": 128,
    "max_tokens": 128 * 10,
    "val_every_steps": 5,
    "val_batches": 1,
    "progress_bar": False,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[TrainConfig, TrainResult]:
    cfg = TrainConfig.from_dict({**CFG, "out_dir": str(tmp_path_factory.mktemp("t") / "run")})
    return cfg, train(cfg, logger=False, progress_lines=False)


def test_final_report_is_made_even_when_a_validation_ended_at_the_same_step(trained,
                                                                           monkeypatch):
    cfg, result = trained
    sent = []
    monkeypatch.setattr(sweep_run, "_save_sae", lambda *a: None)
    monkeypatch.setattr(sweep_run, "_report", lambda m, d: sent.append(m))
    report = sweep_run.TuneReport(0.0, cfg.batch_size, {})
    report.last_tokens = result.metrics["tokens"]  # the last validation, on val_batches only
    report.final(result)
    assert len(sent) == 1 and sent[0]["final"] == 1.0
    assert sent[0]["val_tokens"] == 409 and sent[0]["fvu"] == result.metrics["fvu"]


def test_trial_finished_before_its_final_report_is_measured_on_the_whole_set(trained,
                                                                            tmp_path):
    cfg, result = trained
    local = tmp_path / "ckpt"
    local.mkdir()
    result.sae.save(local / sweep_run.SAE_DIR)
    last = {"fvu": 9.0, "l0": 4.0, "mse": 1.0, "l1": 1.0, "dead_frac": 0.25,
            "tokens": result.metrics["tokens"], "wall_time_s": 1.0, "final": 0.0}
    (local / sweep_run.METRICS_FILE).write_text(json.dumps(last))
    m = sweep_run._final_from_checkpoint(local, cfg, 0.0, {"architecture": "topk"}, last)
    whole = evaluate_rows(result.sae, make_datamodule(cfg).val_dataloader())
    assert m["fvu"] == pytest.approx(whole["fvu"]) and m["val_tokens"] == 409
    assert m["final"] == 1.0 and m["dead_frac"] == 0.25 and m["architecture"] == "topk"
