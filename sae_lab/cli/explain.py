"""For each latent, an LLM reads its top and randomly sampled activating contexts and gives a title
and an explanation; then, given only the explanation, it picks the activating contexts out of a
shuffled mix of held-out activating and non-activating ones: the score is balanced accuracy (0.5 =
chance). The LLM is an OpenAI-compatible chat endpoint (--url, --model; Ollama, vLLM, llama.cpp's
server) or a local transformers causal LM (--local-model). --concurrency requests are in flight at
once, --batch latents per prompt. Each latent's record is cached in --cache-dir as it is done (a
rerun asks only for what is missing) and all are merged into --out.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from sae_lab.cli.args import add_device, add_sae_dir, command, int_at_least

if TYPE_CHECKING:
    from sae_lab.reading.explain import Chat


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "explain", __doc__)
    add_sae_dir(p, shards=True)
    p.add_argument("--latents", help="which latents, e.g. 0-19,512 (default: the first "
                   "--max-latents)")
    p.add_argument("--max-latents", type=int_at_least(1), default=20,
                   help="number of latents when neither --latents nor --sample is given")
    p.add_argument("--sample", type=int_at_least(1),
                   help="a random sample (drawn from --seed) of this many latents that fire on "
                   "the shards, instead of the first --max-latents")
    p.add_argument("--url", default="http://127.0.0.1:11434/v1",
                   help="OpenAI-compatible API base (Ollama's by default)")
    p.add_argument("--model", default="llama3.2", help="chat model name at --url")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="bearer token, if the endpoint needs one (default: $OPENAI_API_KEY)")
    p.add_argument("--local-model", help="a local transformers causal LM directory to use "
                   "instead of --url (one question at a time)")
    p.add_argument("--concurrency", type=int_at_least(1), default=16,
                   help="requests in flight at once (lower it, or raise --timeout, for a server "
                   "that answers one at a time)")
    p.add_argument("--batch", type=int_at_least(1), default=1,
                   help="latents per prompt (answered as JSON keyed by latent; a latent whose "
                   "answer does not parse is asked alone)")
    p.add_argument("--out", help="results JSON (default: SAE_DIR/explanations.json)")
    p.add_argument("--cache-dir", help="per-latent records, one subdirectory per SAE, model, "
                   "data and prompt settings (default: SAE_DIR/autointerp)")
    p.add_argument("--top", type=int_at_least(1), default=10,
                   help="top-activating contexts shown to the explainer")
    p.add_argument("--sampled", type=int_at_least(0), default=5,
                   help="random activating contexts also shown")
    p.add_argument("--held-out", type=int_at_least(2), default=10,
                   help="activating contexts kept back for detection (half next-to-top, half "
                   "random), plus as many non-activating ones")
    p.add_argument("--context-left", type=int_at_least(0), default=12)
    p.add_argument("--context-right", type=int_at_least(0), default=4)
    p.add_argument("--max-tokens", type=int_at_least(1), help="read at most this many shard rows")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--retries", type=int_at_least(0), default=3,
                   help="retries of a failed request (timeouts, 5xx, 429), with backoff")
    p.add_argument("--redo-failed", action="store_true",
                   help="retry latents recorded as failed (others in the cache are kept)")
    p.add_argument("--tokenizer", help="tokenizer (default: the SAE's model, else the shards')")
    p.add_argument("--seed", type=int, default=0)
    add_device(p, help="auto, cpu, cuda, ...")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.reading.autointerp import explain_dir
    from sae_lab.reading.explain import HTTPChat, LocalChat, format_table

    def make_chat(device: str) -> Chat:
        if args.local_model:
            return LocalChat(args.local_model, device)
        return HTTPChat(args.url, args.model, args.api_key, timeout=args.timeout,
                        retries=args.retries)

    done = explain_dir(
        args.sae_dir, args.shards, make_chat, latents=args.latents,
        max_latents=args.max_latents, sample=args.sample, out=args.out,
        cache_dir=args.cache_dir, concurrency=args.concurrency, batch=args.batch,
        top=args.top, sampled=args.sampled, held_out=args.held_out,
        context_left=args.context_left, context_right=args.context_right,
        max_tokens=args.max_tokens, redo_failed=args.redo_failed, tokenizer=args.tokenizer,
        seed=args.seed, device=args.device, say=lambda s: print(s, file=sys.stderr))
    print(format_table(done.records, done.latents))
    s = done.summary
    if s["n_asked"]:
        print(f"asked about {s['n_asked']} latents, {s['n_cached']} more from the cache "
              f"{s['cache']}", file=sys.stderr)
        print(f"saved: {done.out}")
    else:
        print(f"all {len(done.latents)} latents already in the cache {s['cache']} "
              "(--redo-failed retries failed ones)")
