"""A real-scale rehearsal on CPU: Llama-3.2-3B-shaped activations into a 65,536-latent TopK SAE.

    python benchmarks/rehearsal.py [--steps 3] [--d-sae 65536] [--batch 4096]
    python benchmarks/rehearsal.py --part 7b     # a Mistral-7B-shaped block, 8bit vs float32

Part `3b` (default): a Llama model built from a config with Llama-3.2-3B's widths (d_model 3072,
MLP 8192, 24 heads, 8 KV heads, vocabulary 128,256), two layers, random weights, float32. Its
layer-1 resid_post activations (the forward pass stops there) feed a TopK SAE (sparse path) at
batch 4096 through Lightning, one model forward per step, in this process. Prints tokens/s and the
peak RSS of the process against `sae_lab.plan`'s estimate for the same run (model + forward pass +
SAE state + pre-activations + runtime).

Part `7b`: one block of a Mistral-7B-shaped model (d_model 4096, MLP 14336) saved and loaded
back in float32 and with quantize=8bit (bitsandbytes' CPU backend), in separate processes: peak
RSS after loading vs the plan's model bytes (and the process peak, which on CPU includes the
float32 weights that 8bit quantizes while loading), and the cosine of the quantized activations
to float32.

Needs ~11 GB of RAM (part 3b); run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch

LLAMA_3B = dict(hidden_size=3072, intermediate_size=8192, num_attention_heads=24,
                num_key_value_heads=8, vocab_size=128_256, max_position_embeddings=2048,
                tie_word_embeddings=True)
MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=32_000, max_position_embeddings=2048)
CTX = 128


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def rss() -> int:
    """Resident bytes now (Linux)."""
    import gc
    import os

    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def captured_batches(model, layer: int, batch: int, steps: int, vocab: int):
    """Activations [batch, d_model] of `layer`, one forward pass per batch (random token ids).
    With wip/live's `data: {live: ...}` this generator becomes that source (see part_3b)."""
    from sae_lab.data import layers as L

    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch // CTX, CTX), generator=g)
        with torch.inference_mode(), L.capture(model, [layer], "resid_post") as acts:
            L.run_to_hooks(model, input_ids=ids)
        yield acts[layer].reshape(-1, acts[layer].shape[-1]).clone()


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, batches) -> None:
        self.batches = batches

    def __iter__(self):
        return self.batches


def part_3b(a: argparse.Namespace) -> dict:
    import pytorch_lightning as pl
    import transformers as T

    from sae_lab import plan as P
    from sae_lab.sae.registry import ARCHITECTURES
    from sae_lab.train.config import TrainConfig
    from sae_lab.train.module import SAEModule
    from sae_lab.train.run import quiet_lightning

    config = T.LlamaConfig(num_hidden_layers=2, **LLAMA_3B)
    cfg = TrainConfig.from_dict({
        "sae": {"architecture": "topk", "d_sae": a.d_sae, "k": 32, "decoder": "sparse"},
        "data": {"synthetic": {"d": config.hidden_size}}, "batch_size": a.batch,
        "max_tokens": a.batch * a.steps, "device": "cpu", "progress_bar": False,
        "lr_warmup_steps": 0})
    plan = P.Plan("rehearsal", "cpu")
    plan.add("model", "host", P.model_bytes(config, "float32"))
    plan.add("forward", "host", P.forward_bytes(config, a.batch // CTX, CTX, "float32"))
    plan.add("captured batch", "host", a.batch * config.hidden_size * 4)
    P.add_trial(plan, cfg, config.hidden_size, data_source=False)
    plan.add("runtime", "host", P.RUNTIME)

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = T.LlamaModel(config).eval()
    build_s = time.perf_counter() - t0
    sae = ARCHITECTURES["topk"](cfg.sae.with_d_in(config.hidden_size))
    module = SAEModule(sae, cfg)
    # The source: captured activations, in-process. With data.live this is `train(cfg)` with
    # cfg.data = {live: {model: ..., layers: [1], ctx_len: 128}} instead of these two lines.
    source = captured_batches(model, 1, a.batch, a.steps + 1, config.vocab_size)
    module.initialise(next(source))
    quiet_lightning()
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            self.t = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            times.append(time.perf_counter() - self.t)

    # Lightning fetches the next batch (a model forward) before the step: time whole steps.
    trainer = pl.Trainer(accelerator="cpu", max_steps=a.steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         limit_val_batches=0, callbacks=[Clock()], enable_model_summary=False)
    t1 = time.perf_counter()
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Stream(source),
                                                                      batch_size=None))
    wall = time.perf_counter() - t1
    return {"part": "3b", "steps": a.steps, "batch": a.batch, "d_sae": a.d_sae,
            "model_build_s": round(build_s, 1),
            "tokens_per_s_train_steps": round(a.batch * len(times) / sum(times), 1),
            "tokens_per_s_with_forward": round(a.batch * a.steps / wall, 1),
            "peak_rss": peak_rss(), "plan_host": plan.total("host"),
            "plan_table": plan.table()}


def part_7b_child(path: str, quantize: str) -> dict:
    import transformers  # noqa: F401  (imported before the baseline)

    from sae_lab import plan as P
    from sae_lab.data import layers as L
    from sae_lab.models import load_model

    base = rss()
    model = load_model(path, lm_head=False, quantize=quantize)
    loaded = rss()
    ids = torch.randint(0, 32_000, (4, CTX), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), L.capture(model, [0], "resid_post") as acts:
        L.run_to_hooks(model, input_ids=ids)
    torch.save(acts[0].float(), f"{path}/acts_{quantize}.pt")
    return {"quantize": quantize, "load_rss_delta": loaded - base, "peak_rss": peak_rss(),
            "plan_model": P.model_bytes(P.model_config(path), "float32", quantize)}


def part_7b() -> dict:
    import transformers as T

    out: dict = {"part": "7b"}
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        T.MistralModel(T.MistralConfig(num_hidden_layers=1, **MISTRAL_7B)).save_pretrained(d)
        for q in ("none", "8bit"):
            r = subprocess.run([sys.executable, __file__, "--part", "7b-child", "--path", d,
                                "--quantize", q], capture_output=True, text=True, check=True)
            out[q] = json.loads(r.stdout.strip().splitlines()[-1])
        ref, q8 = (torch.load(f"{d}/acts_{q}.pt", weights_only=True) for q in ("none", "8bit"))
        cos = torch.nn.functional.cosine_similarity(q8.flatten(0, 1), ref.flatten(0, 1), dim=-1)
        out["cosine_8bit_mean"], out["cosine_8bit_min"] = cos.mean().item(), cos.min().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="3b", choices=["3b", "7b", "7b-child"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--d-sae", type=int, default=65_536)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--path")
    ap.add_argument("--quantize", default="none")
    a = ap.parse_args()
    if a.part == "7b-child":
        print(json.dumps(part_7b_child(a.path, a.quantize)))
        return
    r = part_3b(a) if a.part == "3b" else part_7b()
    if a.part == "3b":
        print(r.pop("plan_table"))
        ratio = r["peak_rss"] / r["plan_host"]
        print(f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB vs plan {r['plan_host'] / 2**30:.2f} GiB"
              f" (measured/plan {ratio:.3f}); tokens/s: {r['tokens_per_s_train_steps']} "
              f"(train steps), {r['tokens_per_s_with_forward']} (with the model's forward)")
    else:
        for q in ("none", "8bit"):
            x = r[q]
            print(f"7B-shaped block, {q}: RSS after load +{x['load_rss_delta'] / 2**30:.2f} GiB, "
                  f"plan model {x['plan_model'] / 2**30:.2f} GiB (measured/plan "
                  f"{x['load_rss_delta'] / x['plan_model']:.3f}), process peak "
                  f"{x['peak_rss'] / 2**30:.2f} GiB")
        print(f"cosine 8bit vs float32: mean {r['cosine_8bit_mean']:.5f}, "
              f"min {r['cosine_8bit_min']:.5f}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
