"""Training throughput of sae_lab against a plain PyTorch TopK step measured in the same run.

    python benchmarks/train_throughput.py            # every table; Table 3 adds a few minutes
    python benchmarks/train_throughput.py --quick    # d_sae=6144, k=32 only, fewer steps
    python benchmarks/train_throughput.py --only penalty --threads 1   # Table 3 alone

Table 1, for d_sae in {6144, 24576} and k in {32, 128}: the plain reference (a dense
TopK step: topk, scatter, decoder matmul, Adam, unit-norm decoder), sae_lab's dense and sparse
TopK steps (training_loss + backward + the optimiser SAEModule configures), the sparse step with
10% dead latents (AuxK on) and BatchTopK's sparse step, all taking turns step by step; then the
sparse TopK step through the full Lightning path (`sae_lab.train`, steady-state steps timed by a
callback that runs one reference step before each batch, outside the timed span). Each row:
tokens/s (median step), the ratio to the reference, and the memory two steps of a freshly built
model need beyond the model itself: optimiser state, reused buffers, temporaries (peak RSS in a
separate process on CPU, peak allocated on CUDA; the Lightning rows run the same step).

Table 2: every architecture through the full Lightning path at d_sae=6144 (k=32) on
synthetic data, each timed next to the reference, with its held-out FVU after the same number of
steps; TopK and BatchTopK come with both decoders, so the FVU column shows the sparse path
learning what the dense one does (same seed).

Table 3: relu, jumprelu and gated once sparse (bias or threshold set so that L0 is
about --l0, printed as measured), each against a plain PyTorch step of the same maths (no sae_lab
code), the two taking turns step by step; the ratio is the median of the per-pair ratios, with
their range.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from sae_lab.sae import ARCHITECTURES, sae_config
from sae_lab.training.config import DataConfig, SyntheticConfig, TrainConfig
from sae_lab.training.module import SAEModule
from sae_lab.training.run import train


class PlainTopK(nn.Module):
    """The reference: a straightforward dense TopK SAE in plain PyTorch."""

    def __init__(self, d_in: int, d_sae: int, k: int) -> None:
        super().__init__()
        W = torch.randn(d_sae, d_in)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W)  # [d_sae, d_in]
        self.W_enc = nn.Parameter(W.T.clone())  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc  # [B, d_sae]
        values, indices = pre.topk(self.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        x_hat = z @ self.W_dec + self.b_dec
        return (x_hat - x).pow(2).sum(dim=-1).mean()


def plain_step_fn(d_in: int, d_sae: int, k: int, device: str) -> Callable[[Tensor], None]:
    model = PlainTopK(d_in, d_sae, k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=4e-4)

    def step(x: Tensor) -> None:
        model(x).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.W_dec /= model.W_dec.norm(dim=1, keepdim=True)

    return step


class PlainPenalty(nn.Module):
    """The penalty references: ReLU-L1, JumpReLU and Gated SAEs written as the papers'
    equations in plain dense PyTorch, as a straightforward implementation would."""

    def __init__(self, arch: str, d_in: int, d_sae: int, lam: float, cut: float) -> None:
        super().__init__()
        W = torch.randn(d_sae, d_in)
        W /= W.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W)  # [d_sae, d_in]
        self.W_enc = nn.Parameter(W.T.clone())  # [d_in, d_sae]
        self.b_enc = nn.Parameter(torch.full((d_sae,), -cut if arch == "relu" else 0.0))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if arch == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(cut)))
        if arch == "gated":
            del self.b_enc
            self.b_gate = nn.Parameter(torch.full((d_sae,), -cut))
            self.r_mag = nn.Parameter(torch.zeros(d_sae))
            self.b_mag = nn.Parameter(torch.zeros(d_sae))
        self.arch, self.lam = arch, lam

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(loss, L0)."""
        if self.arch == "gated":
            pre = (x - self.b_dec) @ self.W_enc  # [B, d_sae]
            pi_gate = pre + self.b_gate
            z = (pi_gate > 0) * (pre * self.r_mag.exp() + self.b_mag).relu()
            gate = pi_gate.relu()
            x_hat_frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
            penalty = (gate * self.W_dec.norm(dim=1)).sum(-1).mean()
            penalty = penalty + (x_hat_frozen - x).pow(2).sum(-1).mean() / self.lam
        else:
            pre = (x - self.b_dec) @ self.W_enc + self.b_enc  # [B, d_sae]
            if self.arch == "relu":
                z = pre.relu()
                penalty = (z * self.W_dec.norm(dim=1)).sum(-1).mean()
            else:
                theta = self.log_threshold.exp()
                z = PlainJumpReLU.apply(pre, theta)
                penalty = PlainStep.apply(pre, theta).sum(-1).mean()
        x_hat = z @ self.W_dec + self.b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean() + self.lam * penalty
        return loss, (z > 0).sum(-1).float().mean()


BANDWIDTH = 0.1  # JumpReLU's kernel width, sae_lab's default


class PlainJumpReLU(torch.autograd.Function):
    """pre * H(pre - theta); theta learns through the rectangle-kernel estimator (arXiv
    2407.14435, eq. 11)."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor) -> Tensor:
        ctx.save_for_backward(pre, theta)
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        kernel = ((pre - theta) / BANDWIDTH).abs() < 0.5
        return grad * (pre > theta), (-(theta / BANDWIDTH) * kernel * grad).sum(0)


class PlainStep(torch.autograd.Function):
    """H(pre - theta), the L0 term, with the estimator of eq. 12."""

    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor) -> Tensor:
        ctx.save_for_backward(pre, theta)
        return (pre > theta).float()

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        kernel = ((pre - theta) / BANDWIDTH).abs() < 0.5
        return None, (-(1 / BANDWIDTH) * kernel * grad).sum(0)


def plain_penalty_step_fn(
    arch: str, d_in: int, d_sae: int, lam: float, cut: float, device: str, l0: list[float]
) -> Callable[[Tensor], None]:
    model = PlainPenalty(arch, d_in, d_sae, lam, cut).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=4e-4)
    unit_norm = arch != "relu"  # relu keeps the decoder norm in its penalty

    def step(x: Tensor) -> None:
        loss, batch_l0 = model(x)
        loss.backward()
        W, g = model.W_dec, model.W_dec.grad
        if unit_norm:  # drop the gradient along the rows, then renormalise
            g -= (g * W).sum(1, keepdim=True) * W
        opt.step()
        opt.zero_grad(set_to_none=True)
        if unit_norm:
            with torch.no_grad():
                W /= W.norm(dim=1, keepdim=True)
        l0.append(batch_l0.item())

    return step


def sae_lab_penalty_step_fn(
    arch: str, d_in: int, d_sae: int, cut: float, device: str, l0: list[float], decoder: str
) -> Callable[[Tensor], None]:
    """sae_lab's step, as sae_lab_step_fn, with its default sparsity_coef and the threshold (or
    bias) at `cut` as in the reference."""
    cfg = sae_config(arch, d_in=d_in, d_sae=d_sae, decoder=decoder)
    sae = ARCHITECTURES[arch](cfg).to(device)
    with torch.no_grad():
        if arch == "relu":
            sae.b_enc.fill_(-cut)
        elif arch == "gated":
            sae.b_gate.fill_(-cut)
        else:
            sae.log_threshold.fill_(math.log(cut))
    module = SAEModule(sae, TrainConfig(sae=cfg, lr_warmup_steps=0))
    opt = module.configure_optimizers()["optimizer"]

    def step(x: Tensor) -> None:
        out = sae.training_loss(x, 1000)
        out.loss.backward()
        sae.after_step(out, 1000)
        sae.remove_parallel_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()
        l0.append(out.l0.item())

    return step


def sae_lab_step_fn(
    arch: str, d_in: int, d_sae: int, k: int, decoder: str, device: str, precision: str,
    dead_frac: float = 0.0,
) -> Callable[[Tensor], None]:
    """sae_lab's step without Lightning: training_loss, backward and SAEModule's own hooks and
    optimiser, so that only the Trainer's own work separates it from the Lightning rows."""
    cfg = sae_config(arch, d_in=d_in, d_sae=d_sae, k=k, decoder=decoder)
    sae = ARCHITECTURES[arch](cfg).to(device)
    if dead_frac:  # AuxK runs on dead latents; make some
        sae.tokens_since_fired[: int(dead_frac * d_sae)] = 10**12
    module = SAEModule(sae, TrainConfig(sae=cfg, lr_warmup_steps=0))
    opt = module.configure_optimizers()["optimizer"]
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step(x: Tensor) -> None:
        with autocast:
            out = sae.training_loss(x, 1000)
        out.loss.backward()
        sae.after_step(out, 1000)  # dead counts, thresholds: as SAEModule does
        sae.remove_parallel_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()
        if dead_frac:  # keep them dead
            sae.tokens_since_fired[: int(dead_frac * d_sae)] = 10**12

    return step


def make_step(
    arch: str, d_in: int, d_sae: int, k: int, decoder: str, device: str, precision: str,
    dead_frac: float,
) -> Callable[[Tensor], None]:
    """A training step of the plain reference (arch "plain") or of sae_lab, seeded alike."""
    torch.manual_seed(0)
    if arch == "plain":
        return plain_step_fn(d_in, d_sae, k, device)
    return sae_lab_step_fn(arch, d_in, d_sae, k, decoder, device, precision, dead_frac)


# --- measuring ---------------------------------------------------------------------------------


class Memory:
    """Peak memory above the starting point: RSS high-water mark on CPU, allocator on CUDA."""

    def __init__(self, device: str) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux)
            self.base = _proc_kb("VmRSS") * 1024
        except OSError:
            self.base = None

    def peak_mb(self) -> float | None:
        if self.device == "cuda":
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        if self.base is None:
            return None
        return (_proc_kb("VmHWM") * 1024 - self.base) / 2**20


def _proc_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(key)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    steps_by_row: dict[str, Callable[[Tensor], None]], batches: list[Tensor], warmup: int,
    steps: int, device: str,
) -> dict[str, float]:
    """Median seconds per step of each row. The rows take turns step by step, so that a change in
    machine load during the run hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in steps_by_row}
    for i in range(warmup + steps):
        x = batches[i % len(batches)]
        for name, step in steps_by_row.items():
            _sync(device)
            t0 = time.perf_counter()
            step(x)
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def step_memory(
    make_step: Callable[[], Callable[[Tensor], None]], batches: list[Tensor], device: str
) -> float | None:
    """Peak memory of two training steps of a freshly built model, above what the model itself
    holds: optimiser state, reused buffers and every step's temporaries (MiB)."""
    gc.collect()  # what earlier rows left behind must not be freed inside the measurement
    step = make_step()
    mem = Memory(device)
    mem.reset()
    step(batches[0])
    step(batches[1 % len(batches)])
    return mem.peak_mb()


def measure_memory(
    args, rows: dict[str, tuple[str, str, float]], d_sae: int, k: int, device: str
) -> dict[str, float | None]:
    """step_memory of each row. On CPU in a fresh process where glibc hands every large block
    straight back to the system (MALLOC_MMAP_THRESHOLD_), so that RSS follows live memory: in a
    long run, memory freed earlier is reused without showing in RSS."""
    if device == "cuda":
        g = torch.Generator().manual_seed(0)
        batches = [torch.randn(args.batch, args.d_in, generator=g).to(device) for _ in range(2)]
        return {
            name: step_memory(partial(make_step, arch, args.d_in, d_sae, k, decoder, device,
                                      args.precision, dead), batches, device)
            for name, (arch, decoder, dead) in rows.items()
        }
    spec = json.dumps({"rows": rows, "d_in": args.d_in, "d_sae": d_sae, "k": k,
                       "batch": args.batch, "threads": torch.get_num_threads()})
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run([sys.executable, __file__, "--memory-child", spec], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  (memory measurement failed: {out.stderr.strip().splitlines()[-1:]})")
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_child(spec_json: str) -> None:
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(spec["batch"], spec["d_in"], generator=g) for _ in range(2)]
    result = {}
    for name, (arch, decoder, dead) in spec["rows"].items():
        make = partial(make_step, arch, spec["d_in"], spec["d_sae"], spec["k"], decoder, "cpu",
                       "32", dead)
        result[name] = step_memory(make, batches, "cpu")
    print(json.dumps(result))


class StepTimer(pl.Callback):
    """Times Lightning's training steps from one batch start to the next: everything the Trainer
    does per step. Before each batch it also runs one step of `reference`, outside the timed
    span, so that both are measured under the same machine load."""

    def __init__(self, warmup: int, device: str, reference: Callable[[Tensor], None]) -> None:
        self.warmup, self.device, self.reference = warmup, device, reference
        self.spans: list[float] = []
        self.reference_times: list[float] = []
        self.start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(self.device)
        now = time.perf_counter()
        if self.start is not None:
            self.spans.append(now - self.start)
        self.reference(batch)
        _sync(self.device)
        self.start = time.perf_counter()
        self.reference_times.append(self.start - now)

    def result(self) -> tuple[float, float]:
        """(seconds per Lightning step, seconds per reference step), medians after warm-up."""
        w = self.warmup
        return statistics.median(self.spans[w:]), statistics.median(self.reference_times[w:])


class LightningRun(NamedTuple):
    seconds: float
    """Median wall time of a steady-state Lightning step."""
    reference: float
    """Median wall time of the plain reference step, run between the Lightning steps."""
    fvu: float
    """Held-out FVU of the trained SAE."""


def lightning_run(
    arch: str, d_in: int, d_sae: int, k: int, decoder: str, batch: int, warmup: int, steps: int,
    device: str, precision: str, seed: int = 0,
) -> LightningRun:
    """`sae_lab.train` on synthetic data, timed by StepTimer next to the plain reference."""
    sae = {"architecture": arch, "d_sae": d_sae}
    if arch in ("topk", "batchtopk"):
        sae.update(k=k, decoder=decoder)
    n_steps = warmup + steps + 1  # a step's end is the next batch's start
    synthetic = SyntheticConfig(d=d_in, n_features=4 * d_in, active=16, n_tokens=n_steps * batch)
    torch.manual_seed(seed)
    reference = plain_step_fn(d_in, d_sae, k, device)
    reference(torch.randn(batch, d_in, device=device))  # its Adam state exists before training
    timer = StepTimer(warmup, device, reference)
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = TrainConfig(
            sae=sae_config(**sae), data=DataConfig(synthetic=synthetic), batch_size=batch,
            max_tokens=n_steps * batch, lr_warmup_steps=2, val_every_steps=10**9,
            val_batches=4, progress_bar=False, seed=seed, out_dir=out_dir, precision=precision,
            device="cuda" if device == "cuda" else "cpu",
        )
        result = train(cfg, callbacks=[timer])
    return LightningRun(*timer.result(), result.metrics["fvu"])


# --- tables ------------------------------------------------------------------------------------


def fmt_row(
    name: str, sec: float, ref: float, batch: int, mem: float | None, extra: str = ""
) -> str:
    mem_s = f"{mem:8.0f}" if mem is not None else "       -"
    return f"  {name:<44} {batch / sec:10,.0f} {ref / sec:7.2f}x {mem_s}{extra}"


def throughput_table(args, device: str) -> None:
    print("\n## Table 1: TopK step throughput (tokens/s, ratio to the plain step, step memory MiB)")
    for d_sae in args.d_sae:
        for k in args.k:
            g = torch.Generator().manual_seed(0)
            batches = [torch.randn(args.batch, args.d_in, generator=g).to(device) for _ in range(3)]
            print(f"\nd_in={args.d_in} d_sae={d_sae} k={k} batch={args.batch}")
            print(f"  {'path':<44} {'tokens/s':>10} {'ratio':>8} {'mem MiB':>8}")
            rows = {
                "plain PyTorch TopK (reference)": ("plain", "", 0.0),
                "sae_lab topk dense": ("topk", "dense", 0.0),
                "sae_lab topk sparse": ("topk", "sparse", 0.0),
                "sae_lab topk sparse, 10% dead (AuxK on)": ("topk", "sparse", 0.1),
                "sae_lab batchtopk sparse": ("batchtopk", "sparse", 0.0),
            }
            factories = {
                name: partial(make_step, arch, args.d_in, d_sae, k, decoder, device,
                              args.precision, dead)
                for name, (arch, decoder, dead) in rows.items()
            }
            steps = {name: make() for name, make in factories.items()}
            seconds = time_interleaved(steps, batches, args.warmup, args.steps, device)
            del steps
            ref = seconds["plain PyTorch TopK (reference)"]
            memory = measure_memory(args, rows, d_sae, k, device)
            for name in rows:
                print(fmt_row(name, seconds[name], ref, args.batch, memory.get(name)))
            if not args.no_lightning:
                run = lightning_run("topk", args.d_in, d_sae, k, "sparse", args.batch,
                                    args.warmup + 1, args.steps, device, args.precision)
                print(fmt_row("sae_lab topk sparse, full Lightning path *", run.seconds,
                              run.reference, args.batch, None))
                print(f"  * ratio to the reference run between its steps "
                      f"({args.batch / run.reference:,.0f} tokens/s)")


def architecture_table(args, device: str) -> None:
    d_sae, k = args.d_sae[0], args.k[0]
    print(f"\n## Table 2: every architecture through the full Lightning path, d_in={args.d_in} "
          f"d_sae={d_sae} k={k} batch={args.batch}, {args.arch_steps} steps on synthetic data;\n"
          "## each ratio is to the plain reference run between that architecture's steps")
    print(f"  {'architecture':<44} {'tokens/s':>10} {'ratio':>8} {'ref tok/s':>10} {'val FVU':>8}")
    runs = [("relu", "dense"), ("topk", "sparse"), ("topk", "dense"), ("batchtopk", "sparse"),
            ("batchtopk", "dense"), ("gated", "dense"), ("jumprelu", "dense")]
    fvu = {}
    for arch, decoder in runs:
        warm = 2
        run = lightning_run(arch, args.d_in, d_sae, k, decoder, args.batch, warm,
                            args.arch_steps - warm, device, args.precision)
        fvu[arch, decoder] = run.fvu
        name = arch + (f" ({decoder} decoder)" if arch in ("topk", "batchtopk") else "")
        print(f"  {name:<44} {args.batch / run.seconds:10,.0f} {run.reference / run.seconds:7.2f}x"
              f" {args.batch / run.reference:10,.0f} {run.fvu:8.4f}")
    for arch in ("topk", "batchtopk"):
        dense, sparse = fvu[arch, "dense"], fvu[arch, "sparse"]
        print(f"  {arch}: held-out FVU after {args.arch_steps} steps, sparse {sparse:.4f} vs "
              f"dense {dense:.4f} (relative difference {abs(sparse - dense) / dense:.2%})")


def penalty_table(args, device: str) -> None:
    """Table 3: relu, jumprelu and gated once sparse, against the plain references."""
    print(f"\n## Table 3: penalty SAEs once sparse, against a plain PyTorch step of the same maths"
          f"\n## (tokens/s, ratio sae_lab / reference; L0 set to about {args.l0} by the bias or "
          f"threshold, measured below; sae.decoder={args.penalty_decoder})")
    for d_sae in args.d_sae:
        # x ~ N(0, I) and unit-norm encoder columns: pre ~ N(0, 1), so this cut leaves ~l0 on
        cut = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - args.l0 / d_sae)).item()
        g = torch.Generator().manual_seed(0)
        batches = [torch.randn(args.batch, args.d_in, generator=g).to(device) for _ in range(3)]
        print(f"\nd_in={args.d_in} d_sae={d_sae} batch={args.batch}, cut {cut:.2f}")
        print(f"  {'architecture':<12} {'reference':>10} {'sae_lab':>10} {'ratio':>7} "
              f"{'spread':>13} {'L0 ref':>7} {'L0 sae_lab':>10}")
        for arch in ("relu", "jumprelu", "gated"):
            lam = sae_config(arch).lam
            l0s: dict[str, list[float]] = {"ref": [], "sae_lab": []}
            torch.manual_seed(0)
            ref = plain_penalty_step_fn(arch, args.d_in, d_sae, lam, cut, device, l0s["ref"])
            torch.manual_seed(0)
            ours = sae_lab_penalty_step_fn(arch, args.d_in, d_sae, cut, device, l0s["sae_lab"],
                                           args.penalty_decoder)
            ratios = []
            times = {"ref": [], "sae_lab": []}
            for i in range(args.warmup + args.penalty_steps):
                x = batches[i % len(batches)]
                for name, step in (("ref", ref), ("sae_lab", ours)):
                    _sync(device)
                    t0 = time.perf_counter()
                    step(x)
                    _sync(device)
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - t0)
                if i >= args.warmup:
                    ratios.append(times["ref"][-1] / times["sae_lab"][-1])
            t_ref, t_ours = (statistics.median(times[n]) for n in ("ref", "sae_lab"))
            w = args.warmup
            print(f"  {arch:<12} {args.batch / t_ref:10,.0f} {args.batch / t_ours:10,.0f} "
                  f"{statistics.median(ratios):6.2f}x {min(ratios):5.2f}-{max(ratios):5.2f}x "
                  f"{statistics.median(l0s['ref'][w:]):7.1f} "
                  f"{statistics.median(l0s['sae_lab'][w:]):10.1f}")
    print("  ratio: median over the timed steps of reference time / sae_lab time, each pair "
          "measured back to back;\n  spread: smallest and largest of those ratios")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-child"]:
        return memory_child(argv[1])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d_sae=6144, k=32 only; fewer steps")
    p.add_argument("--d-in", type=int, default=384)
    p.add_argument("--d-sae", type=int, nargs="+", default=None, help="default: 6144 24576")
    p.add_argument("--k", type=int, nargs="+", default=None, help="default: 32 128")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--arch-steps", type=int, default=None, help="Table 2 steps (default 12)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--precision", choices=("32", "bf16-mixed"), default="32",
                   help="bf16-mixed: autocast on CUDA (ignored on CPU)")
    p.add_argument("--no-lightning", action="store_true", help="skip the Lightning rows")
    p.add_argument("--skip-architectures", action="store_true", help="skip Table 2")
    p.add_argument("--only", choices=("topk", "architectures", "penalty"), default=None,
                   help="run one table only: 1 (topk), 2 (architectures) or 3 (penalty)")
    p.add_argument("--l0", type=float, default=32.0, help="Table 3: L0 the cut is set for")
    p.add_argument("--penalty-decoder", choices=("auto", "dense"), default="auto",
                   help="Table 3: sae.decoder of the sae_lab rows ('dense': the reference path)")
    p.add_argument("--penalty-steps", type=int, default=None,
                   help="Table 3: timed steps per architecture (default 5, --quick 3)")
    args = p.parse_args(argv)
    args.d_sae = args.d_sae or ([6144] if args.quick else [6144, 24576])
    args.k = args.k or ([32] if args.quick else [32, 128])
    args.steps = args.steps or (3 if args.quick else 5)
    args.arch_steps = args.arch_steps or (6 if args.quick else 12)
    args.penalty_steps = args.penalty_steps or (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        args.precision = "32"
    pl.seed_everything(0, verbose=False)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available: ...", per run
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"precision {args.precision}, load average {load:.2f}")
    start = time.perf_counter()
    if args.only in (None, "topk"):
        throughput_table(args, device)
    if args.only == "architectures" or not (args.only or args.skip_architectures
                                            or args.no_lightning):
        architecture_table(args, device)
    if args.only in (None, "penalty"):
        penalty_table(args, device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average at the end {load:.2f}")


if __name__ == "__main__":
    main()
