"""Is resume exact when a checkpoint keeps Adam's moments in bfloat16 instead of float32?

    python benchmarks/resume_moments.py [--out /tmp/resume_moments]

A tiny run (16 x 64, 20 steps of 128 rows, synthetic data) per architecture is trained straight
through, keeping its checkpoint of step 10. The run is resumed from that checkpoint as written
(float32 moments) and from a copy whose moments are rounded to bfloat16 (what a checkpoint half
the size of its moments would hold), and the largest difference of any weight from the
uninterrupted run's is printed: 0 is an exact resume.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch

from sae_lab.training.config import TrainConfig
from sae_lab.training.run import train


def config(out: Path, name: str, architecture: str) -> TrainConfig:
    sae = {"architecture": architecture, "expansion_factor": 4}
    if architecture in ("topk", "batchtopk"):
        sae["k"] = 4
    return TrainConfig.from_dict({
        "sae": sae, "batch_size": 128, "max_tokens": 128 * 20, "val_every_steps": 10,
        "val_batches": 1, "lr_warmup_steps": 5, "progress_bar": False, "out_dir": str(out / name),
        "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 1000}}})


class KeepCheckpoint(pl.Callback):
    """Copy last.ckpt (written by the validation of step 10) before the next one replaces it."""

    def __init__(self, to: Path) -> None:
        self.to = to

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == 12:
            shutil.copy(self.to.parent / "checkpoints" / "last.ckpt", self.to)


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].float() - sb[k].float()).abs().max().item()
               for k in sa if sa[k].is_floating_point())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="resume_moments_"))
    for arch in ("relu", "topk"):
        snap = out / f"{arch}-straight" / "step10.ckpt"
        straight = train(config(out, f"{arch}-straight", arch), callbacks=[KeepCheckpoint(snap)],
                         logger=False)
        ckpt = torch.load(snap, weights_only=True)
        for state in ckpt["optimizer_states"][0]["state"].values():
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = state[key].to(torch.bfloat16).float()
        rounded = snap.with_name("step10-bf16.ckpt")
        torch.save(ckpt, rounded)
        for label, path in (("float32", snap), ("bfloat16", rounded)):
            resumed = train(config(out, f"{arch}-{label}", arch), ckpt_path=path, logger=False)
            print(f"{arch}: resumed at step 10 from {label} moments: max |w - w_uninterrupted| "
                  f"after 20 steps = {max_difference(resumed.sae, straight.sae):.3g}", flush=True)


if __name__ == "__main__":
    main()
