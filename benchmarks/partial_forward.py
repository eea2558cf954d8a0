"""What stopping after the deepest harvested layer saves: forward time and weights in memory.

    python benchmarks/partial_forward.py [--layers 8] [--layer 1] [--d-model 512] [--reps 5]

A random Llama (built from a config) of --layers blocks; activations at --layer read three ways,
interleaved rep by rep so that load on a shared machine hits all three alike:
  full       the whole forward pass (the hook only records)
  stop       `capture` stops the pass after the hooked block (the model still holds every block)
  cut        load_model(keep_layers=layer+1): later blocks are not built either
Prints median seconds per forward, the speed-ups over `full`, and parameter bytes. The three
activations are checked to be identical.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import transformers as T

from sae_lab.lm import hooks as L
from sae_lab.lm.load import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per forward (ctx 128)")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = T.LlamaConfig(num_hidden_layers=a.layers, hidden_size=a.d_model,
                        intermediate_size=4 * a.d_model, num_attention_heads=8,
                        num_key_value_heads=8, vocab_size=4096)
    with tempfile.TemporaryDirectory() as d:
        T.LlamaModel(cfg).save_pretrained(d)
        full = load_model(d, lm_head=False)
        cut = load_model(d, lm_head=False, keep_layers=a.layer + 1)
    ids = torch.randint(0, 4096, (a.tokens // 128, 128))

    def run(model, stop: bool) -> tuple[float, torch.Tensor]:
        t = time.perf_counter()
        with torch.inference_mode(), L.capture(model, [a.layer], "resid_post", stop) as acts:
            L.run_to_hooks(model, input_ids=ids)
        return time.perf_counter() - t, acts[a.layer]

    ways = {"full": (full, False), "stop": (full, True), "cut": (cut, True)}
    times: dict[str, list[float]] = {k: [] for k in ways}
    ref = None
    for _ in range(a.reps + 1):  # the first round warms up and is not counted
        for name, (model, stop) in ways.items():
            dt, acts = run(model, stop)
            times[name].append(dt)
            ref = acts if ref is None else ref
            assert torch.equal(acts, ref), f"{name}: activations differ from the full pass"
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    nbytes = {k: sum(p.numel() * p.element_size() for p in m.parameters())
              for k, m in (("full", full), ("cut", cut))}
    print(f"llama {a.layers} layers d_model {a.d_model}, reading layer {a.layer}, "
          f"{a.tokens} tokens per forward, median of {a.reps}")
    for k, v in med.items():
        print(f"  {k:5s} {v * 1000:8.1f} ms  x{med['full'] / v:5.2f}")
    print(f"  parameters: full {nbytes['full'] / 2**20:.1f} MiB, cut {nbytes['cut'] / 2**20:.1f} "
          f"MiB (x{nbytes['full'] / nbytes['cut']:.2f} less)")
    print("  activations identical in all three: yes")


if __name__ == "__main__":
    main()
