"""Reads a jsonl file of {"text", "label"} (two labels), runs the model to the SAE's hook, pools
activations and latents per text, and fits on a stratified split: logistic regression on all
latents, on the k latents whose class means differ most, and on the raw activations, plus a
nearest-centroid prototype classifier in latent space. Prints held-out accuracy and AUROC with
bootstrap 95% intervals; writes OUT/probe.json and OUT/probe.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sae_lab.cli.args import add_hook_args, add_sae_dir, command, int_at_least


def _int_list(text: str) -> list[int]:
    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers like 1,8,32"
                                         ) from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: each k must be >= 1")
    return ks


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {v}")
    return v


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "probe", __doc__)
    add_sae_dir(p)
    p.add_argument("--data", required=True, help="jsonl file: one {\"text\", \"label\"} a line")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--positive", help="the label of the positive class (default: the second "
                   "in sorted order)")
    p.add_argument("--pool", choices=["mean", "max"], default="mean",
                   help="pooling over a text's tokens")
    p.add_argument("--k", type=_int_list, default=[1, 8, 32],
                   help="sizes of the k-sparse latent probes, comma-separated")
    p.add_argument("--test-fraction", type=_fraction, default=0.3, help="held-out share")
    p.add_argument("--bootstrap", type=int_at_least(10), default=1000,
                   help="bootstrap resamples for the intervals")
    p.add_argument("--max-length", type=int_at_least(2), default=128,
                   help="tokens per text (longer texts are truncated)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", help="model (default: the SAE's)")
    add_hook_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.reading.probe import PROBE_JSON, PROBE_PNG, format_table, probe_dir

    result = probe_dir(
        args.sae_dir, args.data, args.out, positive=args.positive, pool=args.pool, ks=args.k,
        test_fraction=args.test_fraction, bootstrap=args.bootstrap,
        max_length=args.max_length, batch_size=args.batch_size, seed=args.seed,
        model=args.model, layer=args.layer, hook=args.hook, device=args.device)
    print(format_table(result))
    out = Path(args.out)
    print(f"saved: {out / PROBE_JSON}, {out / PROBE_PNG}")
