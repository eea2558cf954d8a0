"""Put SAEs from anywhere on one Pareto plot and one table: a sweep's output directory (its best/
SAEs), SAE directories (sae_lab, SAELens, sparsify) and hf://REPO_ID[/PATH][@REVISION], every
one evaluated on the same held-out shard rows."""

from __future__ import annotations

import argparse

from sae_lab.cli.args import command, int_at_least


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "compare", __doc__)
    p.add_argument("sources", nargs="+", metavar="RUN_OR_SAE",
                   help="sweep output directory, SAE directory or hf:// spec")
    p.add_argument("--shards", required=True, help="held-out activation shards")
    p.add_argument("--max-tokens", type=int_at_least(1), default=20_000,
                   help="rows of the shards every SAE is evaluated on")
    p.add_argument("--plot", default="compare.png", help="where the Pareto plot goes")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.share.compare import compare, plot, table

    rows = compare(args.sources, args.shards, max_tokens=args.max_tokens)
    print(table(rows))
    print(f"plot: {plot(rows, args.plot)}")
