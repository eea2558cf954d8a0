"""Latents/s of autointerp against a local OpenAI-compatible server with a fixed delay per request,
one request at a time next to many in flight, measured in the same run.

    python benchmarks/explain_throughput.py                      # 128 latents, 200 ms a request
    python benchmarks/explain_throughput.py --latents 200 --delay 0.5 --concurrency 16 32

The server (tests/helpers/chat_server.py, a threading http.server on 127.0.0.1) sleeps --delay
seconds per request, then answers explain's prompts by rule, so the LLM costs only its delay. The
SAE and data are the one-token ones of tests/helpers/explain_data.py (latent j fires on word j);
every latent takes two requests (explain, detect), or two per --batch latents when batched.
Each run starts from an empty cache; the time covers autointerp whole (both passes over the data,
the evidence, the requests) but its endpoint probe (one request, off here). Target: >= 8x
latents/s with 16 requests in flight than with 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.chat_server import FakeChatServer  # noqa: E402
from helpers.explain_data import Words, one_hot_blocks, token_sae  # noqa: E402

from sae_lab.reading.autointerp import autointerp  # noqa: E402
from sae_lab.reading.explain import HTTPChat  # noqa: E402


def measure(n: int, concurrency: int, batch: int, delay: float) -> tuple[float, int, float]:
    """(latents/s, requests, mean score) of one autointerp run on n latents."""
    sae = token_sae(n)
    parts = list(one_hot_blocks(n * 40, seed=0, v=n))
    whole = {k: torch.cat([p[k] for p in parts]) for k in ("acts", "token_ids", "doc")}

    def blocks():  # one block, as a shard's: the passes cost what they would on real shards
        return iter([whole])

    with FakeChatServer(delay=delay) as server, tempfile.TemporaryDirectory() as cache:
        chat = HTTPChat(server.url, "rule", timeout=60.0, retries=0)
        start = time.perf_counter()
        res = autointerp(sae, blocks, Words(), chat, sample=n, concurrency=concurrency,
                         batch=batch, cache_dir=cache, top=8, sampled=4, held_out=10,
                         probe=False)
        took = time.perf_counter() - start
    assert res["n_scored"] == n, res  # every latent explained and scored
    return n / took, server.requests, res["mean"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=int, default=128)
    ap.add_argument("--delay", type=float, default=0.2, help="seconds per request")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16])
    ap.add_argument("--batch", type=int, default=4, help="also run batched (0: do not)")
    args = ap.parse_args()
    n, delay = args.latents, args.delay
    print(f"{n} latents, {delay * 1000:.0f} ms per request, 2 requests per latent")
    ref, reqs, mean = measure(n, 1, 1, delay)
    print(f"  concurrency  1, batch 1: {ref:7.2f} latents/s  ({reqs} requests, mean score "
          f"{mean:.3f})  reference")
    runs = [(c, 1) for c in args.concurrency]
    runs += [(c, args.batch) for c in args.concurrency if args.batch > 1]
    for c, b in runs:
        rate, reqs, mean = measure(n, c, b, delay)
        print(f"  concurrency {c:2d}, batch {b}: {rate:7.2f} latents/s  ({reqs} requests, mean "
              f"score {mean:.3f})  {rate / ref:5.1f}x")


if __name__ == "__main__":
    main()
