"""Resume is exact: a run stopped (Ctrl-C, or killed after a checkpoint) and resumed ends with
the same weights as one never stopped, on shards and on synthetic data."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import pytorch_lightning as pl
import torch

from sae_lab.training.config import TrainConfig
from sae_lab.training.run import TrainingInterrupted, train


def config(tmp_path, name: str, data: dict, **over) -> TrainConfig:
    d = {
        "sae": {"architecture": "topk", "k": 4, "expansion_factor": 4},
        "data": data,
        "batch_size": 128,
        "max_tokens": 128 * 20,
        "val_every_steps": 10,
        "val_batches": 1,
        "lr_warmup_steps": 5,
        "progress_bar": False,
        "out_dir": str(tmp_path / name),
        **over,
    }
    return TrainConfig.from_dict(d)


SYNTHETIC = {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 1000}}


@pytest.fixture(params=["synthetic", "shards"])
def data(request):
    if request.param == "synthetic":
        return SYNTHETIC  # 7 batches a pass: 20 steps cross passes
    # 2048 training rows, buffer 512: 16 batches an epoch, the shuffle pool in use
    return {"shards": str(request.getfixturevalue("tiny_shards")), "shuffle_buffer": 512}


class SigintAt(pl.Callback):
    """Ctrl-C as a user sends it: SIGINT to this process during step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class CopyCheckpointAt(pl.Callback):
    """Keep last.ckpt as it was at `step` (what a SIGKILL after that validation leaves)."""

    def __init__(self, step: int, to) -> None:
        self.step, self.to = step, to

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            shutil.copy(self.to.parent / "checkpoints" / "last.ckpt", self.to)


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.sae.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.slow
def test_ctrl_c_then_resume_equals_uninterrupted(tmp_path, data):
    straight = train(config(tmp_path, "straight", data), logger=False)
    cfg = config(tmp_path, "stopped", data)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 14") as info:
        train(cfg, callbacks=[SigintAt(13)], logger=False)
    assert info.value.checkpoint.is_file()
    resumed = train(cfg, ckpt_path=info.value.checkpoint, logger=False)
    assert resumed.metrics["tokens"] == straight.metrics["tokens"] == 128 * 20
    assert_same(weights(resumed), weights(straight))
    assert resumed.metrics["fvu"] == pytest.approx(straight.metrics["fvu"], rel=1e-5)
    assert not list((tmp_path / "stopped" / "checkpoints").glob("last-v*"))


@pytest.mark.slow
def test_killed_after_a_validation_then_resumed_equals_uninterrupted(tmp_path, data):
    """The sweep's case: the process dies, the trial restarts from the last validation's
    checkpoint (step 10), so the stream must restart at batch 10 with the pool as it was."""
    snap = tmp_path / "straight" / "at-step-12.ckpt"
    straight = train(config(tmp_path, "straight", data), callbacks=[CopyCheckpointAt(12, snap)],
                     logger=False)
    resumed = train(config(tmp_path, "again", data), ckpt_path=snap, logger=False)
    assert_same(weights(resumed), weights(straight))
