"""precision: auto picks per device (32 on CPU); 16-mixed runs on CPU with float16 autocast and a
gradient scaler, close to float32, and a pack under it clips the unscaled gradients exactly as
Lightning does for one run."""

from dataclasses import replace

import pytest
import pytorch_lightning as pl
import torch
from helpers.train_config import tiny
from pytorch_lightning.plugins.precision import MixedPrecision

from sae_lab.config import ConfigError
from sae_lab.training import precision
from sae_lab.training.config import TrainConfig
from sae_lab.training.pack import train_pack
from sae_lab.training.run import train


def test_precision_names_resolve_per_device(monkeypatch):
    assert TrainConfig.from_dict({}).precision == "auto"
    assert TrainConfig.from_dict({"precision": "16-mixed"}).precision == "16-mixed"
    with pytest.raises(ConfigError, match="precision='16'"):
        TrainConfig.from_dict({"precision": 16})
    assert [precision.resolve(p, "cpu") for p in precision.PRECISIONS] == [
        "32-true", "32-true", "16-mixed", "32-true"]
    for major, want in ((7, "16-mixed"), (8, "bf16-mixed"), (9, "bf16-mixed")):  # T4, A100, H100
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=0, m=major: (m, 5))
        assert precision.resolve("auto", "gpu") == want
    assert precision.resolve("bf16-mixed", "gpu") == "bf16-mixed"
    kw = precision.trainer_precision("16-mixed", "cpu")
    assert kw["precision"] is None and kw["plugins"][0].scaler is not None


class Seen(pl.Callback):
    def on_train_end(self, trainer, module):
        self.plugin = trainer.precision_plugin
        self.fused = trainer.optimizers[0].defaults["fused"]


def test_16_mixed_runs_on_cpu_within_2_percent_of_float32_on_shards(tmp_path, tiny_shards):
    over = {"batch_size": 64, "max_tokens": 64 * 10, "val_every_steps": 10,
            "save_checkpoints": False}
    fvu = {}
    for p in ("32", "16-mixed"):
        seen = Seen()
        d = tiny(tmp_path / p, precision=p, **over).to_dict()
        d["data"] = {"shards": str(tiny_shards), "shuffle_buffer": 512}
        cfg = TrainConfig.from_dict(d)
        fvu[p] = train(cfg, [seen], logger=False, progress_lines=False).metrics["fvu"]
    assert isinstance(seen.plugin, MixedPrecision) and seen.plugin.device == "cpu"
    assert seen.plugin.scaler is not None and not seen.fused
    assert fvu["32"] < 0.9  # it trained
    assert fvu["16-mixed"] == pytest.approx(fvu["32"], rel=0.02)
    assert fvu["16-mixed"] != fvu["32"]  # float16 really ran


def test_pack_under_16_mixed_clips_like_a_run_alone(tmp_path):
    """Clipping in a pack happens after the scaler unscales (on_before_optimizer_step), as
    Lightning's automatic optimisation does for one run: the member equals its run alone.
    (Members of one pack share the scaler, so a step one member overflows is skipped for all:
    with several members the runs alone can differ in their skipped steps.)"""
    d = tiny(tmp_path, precision="16-mixed", grad_clip=1e-7, max_tokens=256 * 8,
             save_checkpoints=False).to_dict()
    cfg = TrainConfig.from_dict({**d, "sae": {"architecture": "relu", "expansion_factor": 2}})
    alone = train(cfg, logger=False, progress_lines=False)
    packed, = train_pack([cfg], ["relu"], tmp_path / "pack", logger=False, save_checkpoints=False)
    for k, v in alone.sae.state_dict().items():
        torch.testing.assert_close(packed.sae.state_dict()[k], v, rtol=0, atol=1e-6)
    clipped = packed.sae.state_dict()["W_enc"]
    unclipped = train_pack([replace(cfg, grad_clip=0)], ["relu"], tmp_path / "free",
                           logger=False, save_checkpoints=False)[0].sae.state_dict()["W_enc"]
    # Adam is blind to a gradient's scale except through eps (1e-8): a norm clipped to 1e-7 makes
    # updates far smaller, so a clip of the still-scaled gradients would not match the run alone
    assert (clipped - unclipped).abs().max() > 1e-5
