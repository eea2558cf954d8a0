"""Reconstruction metrics over activation shards (FVU, MSE, cosine, L0, dead fraction, shrinkage,
density histogram) and, with --dataset, the model's loss with the SAE spliced in. Prints a table;
writes eval.json (and the density plot) to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sae_lab.cli.args import add_hook_args, add_sae_dir, command, int_at_least


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "eval", __doc__)
    add_sae_dir(p)
    p.add_argument("--shards", help="activation shards to evaluate on (hold them out of training)")
    p.add_argument("--last-shards", type=int_at_least(1), help="evaluate on the manifest's last "
                   "N shards only: what training held out with data.val_shards=N")
    p.add_argument("--max-tokens", type=int_at_least(1),
                   help="evaluate on at most this many shard rows")
    p.add_argument("--batch-size", type=int_at_least(1), default=4096,
                   help="rows per SAE forward pass")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="leave out shard rows holding NaN/Inf (counted in eval.json as "
                   "nonfinite_rows) instead of stopping with an error")
    p.add_argument("--out", help="output directory (default: SAE_DIR/eval)")
    p.add_argument("--model", help="causal LM for the downstream loss (default: the SAE's model)")
    p.add_argument("--dataset", help="text for the downstream loss: .txt/.jsonl/.parquet file or "
                   "a Hub dataset id")
    p.add_argument("--text-column", default="text", help="dataset column holding the text")
    p.add_argument("--split", default="train", help="dataset split")
    p.add_argument("--ctx-len", type=int_at_least(2),
                   help="tokens per sequence (default: the SAE's ctx_len)")
    p.add_argument("--n-seqs", type=int_at_least(1), default=64,
                   help="sequences scored for the loss")
    p.add_argument("--lm-batch-size", type=int_at_least(1), default=8,
                   help="sequences per model forward")
    add_hook_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab import evaluate as E

    report = E.evaluate_dir(
        args.sae_dir, args.shards, args.dataset, last_shards=args.last_shards,
        max_tokens=args.max_tokens, batch_size=args.batch_size,
        skip_nonfinite=args.skip_nonfinite, model=args.model, text_column=args.text_column,
        split=args.split, ctx_len=args.ctx_len, n_seqs=args.n_seqs,
        lm_batch_size=args.lm_batch_size, layer=args.layer, hook=args.hook, device=args.device)
    sae, metrics = report.sae, report.metrics
    print(E.format_table(metrics))
    if E.UNFIRED_FRAC in metrics:
        print(E.unfired_note(sae))
    out = Path(args.out) if args.out else Path(args.sae_dir) / "eval"
    sources = {"sae_dir": str(args.sae_dir), "shards": args.shards,
               "last_shards": args.last_shards, "dataset": args.dataset}
    E.save_report(out, {**metrics, **sources}, report.density)
    print(f"saved: {out / E.EVAL_JSON}")
