"""Training end to end: the Lightning path, the CLI, bad input."""

import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml
from helpers.train_config import TINY, tiny

from sae_lab import load
from sae_lab.training.config import ConfigError, TrainConfig
from sae_lab.training.run import evaluate_rows, train


def test_train_returns_sae_metrics_and_saved_final(tmp_path):
    result = train(tiny(tmp_path))
    assert set(result.metrics) >= {"fvu", "mse", "l0", "l1", "dead_frac", "tokens"}
    assert result.metrics["tokens"] == 256 * 20
    assert result.metrics["l0"] <= 4
    reloaded = load(result.out_dir / "final")
    x = torch.randn(8, 16)
    assert torch.equal(reloaded(x), result.sae(x))
    assert (result.out_dir / "checkpoints" / "last.ckpt").is_file()
    events = list((result.out_dir / "tensorboard").rglob("events.out.tfevents*"))
    assert events, "no TensorBoard log"


def test_tensorboard_has_the_promised_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny(tmp_path, log_every_steps=5))
    acc = EventAccumulator(str(result.out_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in ("mse", "fvu", "l0", "l1", "dead_frac"):
        assert f"train/{name}" in tags and f"val/{name}" in tags, name
    assert {"train/aux", "train/lr", "train/k"} <= tags


def test_normalisation_is_folded_into_saved_weights(tmp_path):
    cfg = tiny(tmp_path, data={"synthetic": {**TINY["data"]["synthetic"], "magnitude_mean": 50.0}})
    result = train(cfg)
    stats = evaluate_rows(load(result.out_dir / "final"), run_val_rows(cfg))
    assert stats["fvu"] == pytest.approx(result.metrics["fvu"], rel=1e-4)
    assert result.sae.metadata["input_scale_folded"] < 0.5  # inputs were large, so scaled down
    assert result.metrics["fvu"] < 0.9  # and the folded SAE still reconstructs raw activations


def run_val_rows(cfg):
    from sae_lab.training.run import make_datamodule

    return make_datamodule(cfg).val_dataloader()


def test_npy_data_and_cli(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", rng.standard_normal((4096, 8)).astype(np.float32))
    cfg = dict(TINY, data={"npy": str(tmp_path / "acts.npy")}, out_dir=str(tmp_path / "cli"))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "sae_lab.cli", "train", str(tmp_path / "cfg.yaml"),
         "--set", "sae.k=2", "--set", "max_tokens=2560"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fvu=" in proc.stdout
    sae = load(tmp_path / "cli" / "final")
    assert sae.cfg.k == 2 and sae.d_in == 8
    saved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert saved["sae"]["k"] == 2 and saved["max_tokens"] == 2560


@pytest.mark.parametrize(
    "overrides, culprit",
    [
        (["lr=-1"], "lr=-1"),
        (["sae.k=1000", "sae.d_in=16"], "sae.k=1000"),
        (["bogus=1"], "bogus"),
        (["data.synthetic.d=0"], "data.synthetic.d"),
        (["nan_policy=ignore"], "nan_policy"),
    ],
)
def test_cli_config_errors_are_one_line_naming_the_field(overrides, culprit, capsys):
    from sae_lab.cli import main

    args = [a for o in overrides for a in ("--set", o)]
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and culprit in lines[0], lines


def test_config_yaml_round_trip(tmp_path):
    cfg = tiny(tmp_path)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="data"):
        TrainConfig.from_dict({"data": {"npy": "a.npy", "shards": "b"}})


class _Poison(torch.utils.data.IterableDataset):
    def __init__(self, good: torch.Tensor, bad_at: int) -> None:
        self.good, self.bad_at = good, bad_at

    def __iter__(self):
        for i in range(100):
            batch = self.good.clone()
            if i == self.bad_at:
                batch[3, 2] = float("nan")
            yield batch


def _poisoned(cfg, bad_at):
    from sae_lab.data.arrays import ArrayDataModule
    from sae_lab.data.synthetic import make_features, sample

    rows = sample(cfg.data.synthetic, make_features(cfg.data.synthetic), 1024, seed=0)
    dm = ArrayDataModule(rows[:512], rows[512:], cfg.batch_size)
    good = next(iter(dm.train_dataloader()))
    dm.train_dataloader = lambda: torch.utils.data.DataLoader(_Poison(good, bad_at), None)
    return dm


def test_nan_batch_stops_with_error_naming_the_step(tmp_path, monkeypatch):
    from sae_lab.training import run

    cfg = tiny(tmp_path)
    monkeypatch.setattr(run, "make_datamodule", lambda c: _poisoned(c, bad_at=7))
    with pytest.raises(FloatingPointError, match="step 7"):
        train(cfg)


def test_nan_batch_skipped_and_counted(tmp_path, monkeypatch):
    from sae_lab.training import run

    cfg = tiny(tmp_path, nan_policy="skip")
    monkeypatch.setattr(run, "make_datamodule", lambda c: _poisoned(c, bad_at=7))
    result = train(cfg)
    assert result.metrics["skipped_batches"] == 1
    assert all(torch.isfinite(p).all() for p in result.sae.parameters())


class _Crash(pl.Callback):
    """Kills the run (an exception out of the training loop) after `step` optimiser steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"killed at step {self.step}")


def test_run_resumed_after_a_crash_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    steps = {"max_tokens": 256 * 30, "val_every_steps": 10}
    whole = train(tiny(tmp_path / "whole", **steps))
    cfg = tiny(tmp_path / "crashed", **steps)
    with pytest.raises(RuntimeError, match="killed at step 15"):
        train(cfg, callbacks=[_Crash(15)])
    last = cfg.out_dir + "/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 10  # mid-run, not the end
    resumed = train(cfg, ckpt_path=last)
    assert resumed.metrics["tokens"] == whole.metrics["tokens"] == 256 * 30
    # Same data order from the checkpoint on, same optimiser state and schedules: same weights.
    for name, want in whole.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], want, rtol=0, atol=1e-6,
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert resumed.metrics["fvu"] == pytest.approx(whole.metrics["fvu"], rel=1e-6)


def test_save_checkpoints_off_leaves_no_checkpoint_files(tmp_path):
    result = train(tiny(tmp_path, save_checkpoints=False))
    assert not (result.out_dir / "checkpoints").exists()
    assert (result.out_dir / "final" / "cfg.json").is_file()
