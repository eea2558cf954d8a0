"""Every CUDA path of sae_lab once, one table: `python benchmarks/gpu_check.py` (< 5 min on one
GPU); `--device cpu` runs the same rows at small shapes (GPU-only rows marked), within a minute.

Rows:
  step      each architecture's training step (training_loss, backward, Adam, decoder norm),
            sparse path against the dense reference, float32: tokens/s at d_in 3072 and 65,536
            latents (GPU; CPU: 64 and 512)
  precision a short `train` of TopK through Lightning under 32, 16-mixed and bf16-mixed (bf16
            where the card has it; CPU trains bf16-mixed in float32): steady-state tokens/s, held-
            out FVU, and the measured peak memory beside `plan`'s figure for the same config
  live      LiveDataModule batches/s from a Llama-shaped model with random weights (GPU: Llama-
            3.2-3B's block widths, 4 blocks; CPU: 64 wide), two layers from one forward pass
  pack      a packed sweep of 4 SAEs, one pack per quarter GPU (Ray, `resources.gpus: 0.25`)
  8bit      the Llama-shaped model loaded in 8 bits (bitsandbytes) and run once: its weights'
            memory beside float16's
Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU, the process's peak RSS growth
(VmHWM after resetting it), which also counts allocator slack.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from sae_lab.sae import ARCHITECTURES, sae_config  # noqa: E402
from sae_lab.training.config import TrainConfig  # noqa: E402
from sae_lab.training.module import SAEModule  # noqa: E402

ARCHS = ("topk", "batchtopk", "matryoshka", "relu", "jumprelu", "gated")
GPU_ONLY = "GPU only"


class Shapes:
    def __init__(self, gpu: bool) -> None:
        self.d_in, self.d_sae, self.batch, self.k = (3072, 65_536, 4096, 64) if gpu else \
            (64, 512, 256, 8)
        self.steps = 10 if gpu else 2
        self.train_d, self.train_latents, self.train_steps = (768, 16_384, 60) if gpu else \
            (32, 256, 6)
        # Llama-3.2-3B's blocks (4 of 28) on a GPU; a 64-wide Llama on CPU
        self.llama = dict(hidden_size=3072, intermediate_size=8192, num_attention_heads=24,
                          num_key_value_heads=8, num_hidden_layers=4) if gpu else \
            dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, num_hidden_layers=2)
        self.ctx, self.windows, self.live_tokens = (512, 8, 32_768) if gpu else (32, 4, 512)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Peak:
    """Peak memory growth in bytes over the span of `with`."""

    def __init__(self, device: str) -> None:
        self.device, self.bytes = device, math.nan

    def __enter__(self) -> Peak:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux)
                self.base = _rss("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base
        elif self.base is not None:
            self.bytes = _rss("VmHWM") - self.base


def _rss(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(key)


def mib(n: float) -> str:
    return "n/a" if not math.isfinite(n) else f"{n / 2**20:,.0f} MiB"


# --- rows ----------------------------------------------------------------------------------------


def step_rows(s: Shapes, device: str) -> list[tuple[str, str, str]]:
    rows = []
    for arch in ARCHS:
        rates = {}
        for decoder in ("sparse", "dense"):
            try:
                rates[decoder] = step_rate(arch, decoder, s, device)
            except torch.OutOfMemoryError:
                rates[decoder] = math.nan
                torch.cuda.empty_cache()
        ratio = rates["sparse"] / rates["dense"]
        rows.append((f"step {arch}", f"d_in {s.d_in}, {s.d_sae:,} latents, batch {s.batch}",
                     f"sparse {rates['sparse']:,.0f} tok/s, dense {rates['dense']:,.0f} tok/s "
                     f"({ratio:.2f}x)"))
    return rows


def step_rate(arch: str, decoder: str, s: Shapes, device: str) -> float:
    torch.manual_seed(0)
    k = {"k": s.k} if "k" in ARCHITECTURES[arch].uses else {}
    cfg = sae_config(arch, d_in=s.d_in, d_sae=s.d_sae, decoder=decoder, **k)
    sae = ARCHITECTURES[arch](cfg).to(device)
    module = SAEModule(sae, TrainConfig(sae=cfg, lr_warmup_steps=0))
    opt = module.configure_optimizers()["optimizer"]
    x = torch.randn(s.batch, s.d_in, device=device)

    def step() -> None:
        out = sae.training_loss(x, 1000)
        out.loss.backward()
        sae.after_step(out, 1000)
        sae.remove_parallel_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()

    return s.batch / timed(step, s.steps, device)


def timed(fn: Callable[[], None], steps: int, device: str) -> float:
    """Median seconds of `steps` calls after warm-up calls (two on CUDA, one on CPU)."""
    for _ in range(2 if device == "cuda" else 1):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


class StepClock(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        sync("cuda" if torch.cuda.is_available() else "cpu")
        self.times.append(time.perf_counter())


def precision_rows(s: Shapes, device: str, tmp: Path) -> list[tuple[str, str, str]]:
    from sae_lab.plan import plan_train
    from sae_lab.training.run import train

    rows = []
    for precision in ("32", "16-mixed", "bf16-mixed"):
        cfg = TrainConfig.from_dict({
            "sae": {"architecture": "topk", "k": 32 if device == "cuda" else 4,
                    "d_sae": s.train_latents},
            "data": {"synthetic": {"d": s.train_d, "n_features": 2 * s.train_d, "active": 8,
                                   "n_tokens": s.batch * s.train_steps}},
            "batch_size": s.batch, "max_tokens": s.batch * s.train_steps,
            "val_every_steps": s.train_steps, "val_batches": 2, "precision": precision,
            "device": device, "save_checkpoints": False, "progress_bar": False,
            "out_dir": str(tmp / f"precision{precision}")})
        clock = StepClock()
        with Peak(device) as peak:
            result = train(cfg, [clock], logger=False, progress_lines=False)
        t = clock.times
        rate = (len(t) - 2) * s.batch / (t[-1] - t[1]) if len(t) > 2 else math.nan
        planned = plan_train(cfg, d_in=s.train_d).total("device")
        note = "" if device == "cuda" or precision != "bf16-mixed" else " (CPU: trains in 32)"
        if device == "cuda" and precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
            note = " (no bfloat16 on this card)"
        rows.append((f"precision {precision}",
                     f"TopK d_in {s.train_d}, {s.train_latents:,} latents, {s.train_steps} steps",
                     f"{rate:,.0f} tok/s, FVU {result.metrics['fvu']:.4f}, peak {mib(peak.bytes)}"
                     f" (plan {mib(planned)}){note}"))
    return rows


def llama_dir(s: Shapes, tmp: Path, corpus: Path) -> Path:
    """A Llama-shaped model with random weights and a small BPE tokenizer, saved to `tmp`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([corpus.read_text()[:100_000]], trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(fast), max_position_embeddings=4096, **s.llama)
    out = tmp / "llama"
    LlamaModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def live_row(s: Shapes, device: str, model: Path, corpus: Path) -> tuple[str, str, str]:
    from sae_lab.data.config import DataConfig
    from sae_lab.data.live import LiveDataModule

    last = s.llama["num_hidden_layers"] - 1
    live = {"model": str(model), "dataset": str(corpus), "layers": [0, last], "ctx_len": s.ctx,
            "batch_size": s.windows, "device": device, "val_tokens": s.batch,
            "model_dtype": "float16" if device == "cuda" else "float32"}
    dm = LiveDataModule(DataConfig(live=live, shuffle_buffer=4 * s.batch), s.batch)
    n, t = 0, None
    for batch in dm.train_dataloader():
        if t is None:  # after the pool's first fill
            sync(device)
            t = time.perf_counter()
            continue
        n += len(batch)
        if n >= s.live_tokens:
            break
    sync(device)
    rate = n / (time.perf_counter() - t)
    width = s.llama["hidden_size"]
    return ("live", f"Llama-shaped {s.llama['num_hidden_layers']} blocks x {width}, ctx {s.ctx},"
            f" layers 0 and {last} from one forward", f"{rate:,.0f} tok/s ({live['model_dtype']})")


def pack_row(s: Shapes, device: str, tmp: Path) -> tuple[str, str, str]:
    what = "packed sweep: 4 SAEs, a pack per 0.25 GPU (Ray)"
    if device != "cuda":
        return ("pack", what, GPU_ONLY)
    from sae_lab.sweep.run import run_sweep
    from sae_lab.sweep.schema import sweep_from_dict

    sweep = sweep_from_dict({
        "name": "gpu_check",
        "base": {"data": {"synthetic": {"d": 256, "n_features": 512, "n_tokens": 65_536}},
                 "batch_size": 1024, "max_tokens": 32_768, "val_every_steps": 16,
                 "sae": {"expansion_factor": 8}},
        "architectures": ["topk"], "space": {"topk": {"k": {"grid": [8, 16, 32, 64]}}},
        "search": "grid", "pack": 1, "scheduler": "none",
        "resources": {"cpus": 1, "gpus": 0.25}})
    t = time.perf_counter()
    result = run_sweep(sweep, tmp / "sweep", verbose=0)
    wall = time.perf_counter() - t
    return ("pack", what, f"{result.counts()} in {wall:.0f} s (Ray start-up included)")


def int8_row(device: str, model: Path) -> tuple[str, str, str]:
    what = "Llama-shaped model in 8 bits (bitsandbytes), one forward"
    if device != "cuda":
        return ("8bit", what, GPU_ONLY)
    from sae_lab.lm.load import load_model

    sizes = {}
    for q, dtype in (("none", "float16"), ("8bit", "float16")):
        with Peak(device) as peak:
            m = load_model(str(model), "cuda", dtype=dtype, lm_head=False, quantize=q)
            with torch.inference_mode():
                m(input_ids=torch.ones(1, 16, dtype=torch.long, device="cuda"))
        sizes[q] = peak.bytes
        del m
        torch.cuda.empty_cache()
    return ("8bit", what, f"peak {mib(sizes['8bit'])} vs float16 {mib(sizes['none'])}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    ap.add_argument("--skip", default="", help="comma-separated rows to leave out "
                    "(step, precision, live, pack, 8bit)")
    args = ap.parse_args(argv)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    skip = set(filter(None, args.skip.split(",")))
    s = Shapes(device == "cuda")
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    start = time.perf_counter()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="sae_lab_gpu_check_") as tmp_name:
        tmp = Path(tmp_name)
        from sae_lab.assets import write_corpus

        corpus = write_corpus(tmp / "corpus.txt", 4 * s.live_tokens + 8192)
        model = llama_dir(s, tmp, corpus) if {"live", "8bit"} - skip else None
        for row, make in (("step", lambda: step_rows(s, device)),
                          ("precision", lambda: precision_rows(s, device, tmp)),
                          ("live", lambda: [live_row(s, device, model, corpus)]),
                          ("pack", lambda: [pack_row(s, device, tmp)]),
                          ("8bit", lambda: [int8_row(device, model)])):
            if row in skip:
                continue
            try:
                rows += make()
            except Exception as e:  # one broken path is a row, not the end of the check
                rows.append((row, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0]}"))
    print(f"sae_lab gpu_check on {name}, torch {torch.__version__}, "
          f"{time.perf_counter() - start:.0f} s")
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for a, b, c in rows:
        print(f"  {a:<{w0}}  {b:<{w1}}  {c}")
    if any(r[1] == "FAILED" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
