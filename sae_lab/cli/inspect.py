"""One pass over activation shards finds each latent's density and top-activating contexts (token
ids decoded with the model's tokenizer); for causal LMs also the output tokens each latent promotes
most (W_dec @ W_U). Writes OUT/index.html, a self-contained page: open it from disk, no server.
"""

from __future__ import annotations

import argparse

from sae_lab.cli.args import add_device, add_sae_dir, command, int_at_least


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "inspect", __doc__)
    add_sae_dir(p, shards=True)
    p.add_argument("--out", required=True, help="output directory; an existing one is "
                   "replaced only if it is an earlier inspect output")
    p.add_argument("--model", help="model / tokenizer (default: the SAE's, else the shards')")
    p.add_argument("--latents", help="which latents to show, e.g. 0-99,512 (default: the first "
                   "--max-latents)")
    p.add_argument("--max-latents", type=int_at_least(1), default=1000,
                   help="number of latents shown when --latents is not given")
    p.add_argument("--top", type=int_at_least(1), default=10, help="contexts per latent")
    p.add_argument("--context-left", type=int_at_least(0), default=12,
                   help="tokens before the activating one")
    p.add_argument("--context-right", type=int_at_least(0), default=4, help="tokens after it")
    p.add_argument("--top-logits", type=int_at_least(0), default=None,
                   help="promoted output tokens per latent; default 10 for causal LMs and skipped "
                   "for others; an explicit N > 0 on a model without an unembedding is an error")
    p.add_argument("--max-tokens", type=int_at_least(1), help="read at most this many shard rows")
    p.add_argument("--batch-size", type=int_at_least(1), default=4096,
                   help="rows per SAE forward pass")
    add_device(p, help="auto, cpu, cuda, ...")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar over the shard rows")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.reading.browser import feature_browser

    index = feature_browser(
        args.sae_dir, args.shards, args.out, model=args.model, latents=args.latents,
        max_latents=args.max_latents, top=args.top, context_left=args.context_left,
        context_right=args.context_right, top_logits=args.top_logits,
        max_tokens=args.max_tokens, batch_size=args.batch_size, device=args.device,
        progress=args.progress)
    print(f"saved: {index}")
