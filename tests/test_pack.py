"""Packs: N SAEs from one data stream, each as if trained alone."""

import pytest
import torch
import yaml

from sae_lab.train.config import TrainConfig
from sae_lab.train.pack import train_pack
from sae_lab.train.run import train

BASE = {
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 4096}},
    "batch_size": 128,
    "max_tokens": 128 * 12,
    "lr_warmup_steps": 3,
    "val_every_steps": 6,
    "val_batches": 2,
    "log_every_steps": 4,
    "progress_bar": False,
}
# Three architectures, different k / lambda / lr / expansion / schedules.
MEMBERS = {
    "relu": {"sae": {"architecture": "relu", "sparsity_coef": 3.0, "expansion_factor": 2},
             "lr": 1e-3, "sparsity_warmup_steps": 4},
    "topk": {"sae": {"architecture": "topk", "k": 4, "expansion_factor": 4}, "lr": 2e-3},
    "jumprelu": {"sae": {"architecture": "jumprelu", "expansion_factor": 3}, "lr": 5e-4,
                 "lr_decay_start": 0.5},
}


def member_cfgs(tmp_path, dtype="float64", **over):
    cfgs = []
    for name, own in MEMBERS.items():
        d = yaml.safe_load(yaml.safe_dump({**BASE, **own, **over}))
        d["sae"]["dtype"] = dtype
        d["out_dir"] = str(tmp_path / name)
        cfgs.append(TrainConfig.from_dict(d))
    return cfgs


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 1e-5)])
def test_pack_of_three_architectures_equals_each_run_alone(tmp_path, dtype, tol):
    cfgs = member_cfgs(tmp_path, dtype)
    alone = [train(c, logger=False, progress_lines=False) for c in cfgs]
    packed = train_pack(cfgs, list(MEMBERS), tmp_path / "pack", logger=False,
                        save_checkpoints=False)
    for a, p in zip(alone, packed, strict=True):
        assert p.status == "done"
        sa, sp = a.sae.state_dict(), p.sae.state_dict()
        assert sa.keys() == sp.keys()
        for k in sa:
            assert torch.allclose(sa[k].double(), sp[k].double(), rtol=0, atol=tol), (p.name, k)
        for k in ("fvu", "mse", "l0", "l1", "dead_frac", "tokens"):
            assert a.metrics[k] == pytest.approx(p.metrics[k], abs=tol, rel=0), (p.name, k)
    # the members really trained (and differ): not three copies of the initial weights
    assert packed[0].metrics["fvu"] < 1 and packed[1].metrics["l0"] <= 4
