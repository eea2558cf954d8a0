"""Peak memory of held-out evaluation, per architecture, in [B, d_sae] float32 buffers.

    python benchmarks/eval_memory.py [--d-in 256] [--d-sae 65536] [--batch 2048]

Each architecture runs `stream_stats` (the loop behind validation, the final metrics and
`sae-lab eval`) over two batches in a child process of its own; a thread samples the process's
resident memory, and the peak above the level before the loop is printed in units of one
[B, d_sae] float32 buffer, next to the figure `sae-lab plan` uses (`step_buffers["eval"]`).
The reference unit is measured in the same run: one `torch.empty(B, d_sae)` touched in full.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_above(fn) -> int:
    """Peak resident bytes above the starting level while fn() runs (sampled every ~0.5 ms)."""
    import gc
    import threading
    import time

    gc.collect()
    base = rss()
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak[0] - base


def child(arch: str, d_in: int, d_sae: int, batch: int) -> dict:
    import torch

    from sae_lab.sae import ARCHITECTURES, sae_config
    from sae_lab.training.metrics import ReconStats, stream_stats

    extra = {"k": 32} if ARCHITECTURES[arch].k_based else {}
    sae = ARCHITECTURES[arch](sae_config(arch, d_in=d_in, d_sae=d_sae, **extra))
    xs = [torch.randn(batch, d_in) for _ in range(2)]
    unit = peak_above(lambda: torch.empty(batch, d_sae).fill_(1.0))
    peak = peak_above(lambda: stream_stats(sae, xs, ReconStats()))
    return {"arch": arch, "buffers": peak / unit,
            "plan": ARCHITECTURES[arch].step_buffers.get("eval", 4.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=65536)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.d_in, a.d_sae, a.batch)))
        return
    from sae_lab.sae import ARCHITECTURES

    print(f"held-out evaluation peak, [B={a.batch}, d_sae={a.d_sae}] float32 buffers "
          f"(d_in {a.d_in}); 'plan' is step_buffers['eval']")
    for arch in ARCHITECTURES:
        out = subprocess.run([sys.executable, __file__, "--child", arch, "--d-in", str(a.d_in),
                              "--d-sae", str(a.d_sae), "--batch", str(a.batch)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{arch:11s} measured {r['buffers']:.2f}  plan {r['plan']:.2f}  "
              f"plan/measured {r['plan'] / r['buffers']:.2f}")


if __name__ == "__main__":
    main()
