"""Export an sae_lab SAE directory so the SAE ecosystem can load it: --format saelens writes what
sae_lens.SAE.load_from_disk(OUT) reads. The feature density for sparsity.safetensors comes from
--density, else SAE_DIR/eval (written by `sae-lab eval --shards`), else --shards.
"""

from __future__ import annotations

import argparse
import sys

from sae_lab.cli.args import add_sae_dir, command


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "export", __doc__, formatter_class=argparse.HelpFormatter)
    add_sae_dir(p)
    p.add_argument("--format", choices=["saelens"], default="saelens", help="target format")
    p.add_argument("--out", required=True, help="directory to write; an existing one is replaced "
                   "only if it is an earlier export")
    p.add_argument("--density", help="feature_density.safetensors from `sae-lab eval`")
    p.add_argument("--shards", help="measure the feature density on these activation shards")
    p.add_argument("--max-tokens", type=int, help="rows of --shards to measure density on")
    p.add_argument("--model-name", help="metadata.model_name (default: the SAE's model)")
    p.add_argument("--hook-name", help="metadata.hook_name (default: blocks.L.hook_H)")
    p.add_argument("--context-size", type=int, help="metadata.context_size (default: ctx_len)")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.export import export_dir

    out, sae, source = export_dir(args.sae_dir, args.out, args.density, args.shards,
                                  args.max_tokens, args.model_name, args.hook_name,
                                  args.context_size)
    if source is None:
        print("note: no feature density known (run `sae-lab eval --shards` first, or pass "
              "--shards); sparsity.safetensors not written", file=sys.stderr)
    else:
        print(f"feature density from {source}")
    print(f"saved: {out} (SAELens architecture {sae.saelens_architecture!r})")
