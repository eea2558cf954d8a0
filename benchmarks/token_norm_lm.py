"""Held-out FVU with `sae.token_norm` on against off, on real all-MiniLM-L6-v2 activations.

    python benchmarks/token_norm_lm.py                       # 300k tokens, layer 3, ~15 min CPU
    python benchmarks/token_norm_lm.py --archs relu,batchtopk --tokens 100000

The known-answer recovery family turned token_norm on by default for every architecture but
TopK, from synthetic data with heavy-tailed token norms. This checks what it costs on an LM's
activations: the demo's corpus (docstrings of this Python's standard library) through MiniLM,
harvested once, then each architecture at a few sparsity settings, token_norm off (the
reference) and on, same seed and data. FVU is measured in raw activation units on the held-out
shard; a ratio above 1 means token_norm reconstructs worse. L0 moves too (a penalty SAE's L0 is
learned), so read the pairs as points near the same L0, not as a frontier. """

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from sae_lab.assets import minilm_path, write_corpus  # noqa: E402
from sae_lab.data import harvest as H  # noqa: E402
from sae_lab.training.config import TrainConfig  # noqa: E402
from sae_lab.training.run import train  # noqa: E402

# Per architecture: the sparsity settings tried (k, or lambda), around the demo sweep's ranges.
SETTINGS = {"relu": [2.0, 4.0, 8.0], "jumprelu": [0.25, 1.0, 4.0], "gated": [1.0, 3.0, 9.0],
            "batchtopk": [24], "matryoshka": [24]}


def run(arch: str, sparsity: float, token_norm: bool, shards: str, tokens: int) -> dict:
    sae = {"architecture": arch, "expansion_factor": 4, "token_norm": token_norm}
    sae["k" if arch in ("batchtopk", "matryoshka") else "sparsity_coef"] = sparsity
    cfg = TrainConfig.from_dict({
        "sae": sae, "data": {"shards": shards}, "batch_size": 1024, "max_tokens": tokens,
        "lr": 1e-3, "val_every_steps": 100_000, "val_batches": 40, "save_checkpoints": False,
        "progress_bar": False, "out_dir": tempfile.mkdtemp(),
    })
    return train(cfg, logger=False).metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=300_000)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--archs", default=",".join(SETTINGS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = H.HarvestConfig(model=str(minilm_path()), dataset=str(
            write_corpus(Path(tmp) / "corpus.txt", args.tokens + 8192)), layers=(args.layer,),
            max_tokens=args.tokens, out=f"{tmp}/shards", shard_rows=40_960, progress=False)
        H.harvest(cfg)
        shards = f"{tmp}/shards/layer_{args.layer}"
        print(f"MiniLM layer {args.layer}, {args.tokens} tokens, expansion 4, lr 1e-3")
        print(f"{'arch':10s} {'k/lambda':>8s} {'FVU off':>8s} {'FVU on':>8s} {'on/off':>7s} "
              f"{'L0 off':>7s} {'L0 on':>7s}")
        for arch in args.archs.split(","):
            for s in SETTINGS[arch]:
                off, on = (run(arch, s, tn, shards, args.tokens) for tn in (False, True))
                print(f"{arch:10s} {s:8g} {off['fvu']:8.4f} {on['fvu']:8.4f} "
                      f"{on['fvu'] / off['fvu']:7.3f} {off['l0']:7.2f} {on['l0']:7.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
