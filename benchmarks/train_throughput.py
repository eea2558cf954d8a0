"""Training throughput of sae_lab against a plain PyTorch TopK step measured in the same run.

    python benchmarks/train_throughput.py            # full run, about 6-10 minutes on 2 CPU cores
    python benchmarks/train_throughput.py --quick    # d_sae=6144, k=32 only, fewer steps

Table 1 (issue 7), for d_sae in {6144, 24576} and k in {32, 128}: the plain reference (a dense
TopK step: topk, scatter, decoder matmul, Adam, unit-norm decoder), sae_lab's dense and sparse
TopK steps (training_loss + backward + the optimiser SAEModule configures), the sparse step with
10% dead latents (AuxK on), BatchTopK's sparse step, and the sparse TopK step through the full
Lightning path (`sae_lab.train`, steady-state steps timed by a callback). Each row: tokens/s, the
ratio to the reference, and the memory the step needs above what the process held before it
(peak RSS on CPU, peak allocated on CUDA).

Table 2 (issue 2): every architecture through the full Lightning path at d_sae=6144 (k=32) on
synthetic data, with its held-out FVU after the same number of steps; the TopK and BatchTopK rows
come in both decoders, so the FVU columns show the sparse path learning what the dense one does.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from sae_lab.sae import ARCHITECTURES, SAEConfig
from sae_lab.train.config import DataConfig, SyntheticConfig, TrainConfig
from sae_lab.train.module import SAEModule
from sae_lab.train.run import train


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


def sae_lab_step_fn(
    arch: str, d_in: int, d_sae: int, k: int, decoder: str, device: str, precision: str,
    dead_frac: float = 0.0,
) -> Callable[[Tensor], None]:
    """sae_lab's step without Lightning: training_loss, backward and SAEModule's own hooks and
    optimiser, so that only the Trainer's own work separates it from the Lightning rows."""
    cfg = SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=k, decoder=decoder)
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
        sae.remove_parallel_grads()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.normalize_decoder()
        if dead_frac:  # keep them dead
            sae.tokens_since_fired[: int(dead_frac * d_sae)] = 10**12

    return step


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


def time_steps(
    step: Callable[[Tensor], None], batches: list[Tensor], warmup: int, steps: int, device: str
) -> tuple[float, float | None]:
    """(median seconds per step after `warmup` steps, peak step memory in MiB)."""
    for i in range(warmup):
        step(batches[i % len(batches)])
    mem = Memory(device)
    mem.reset()
    times = []
    for i in range(steps):
        x = batches[(warmup + i) % len(batches)]
        _sync(device)
        t0 = time.perf_counter()
        step(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak_mb()


class StepTimer(pl.Callback):
    """Wall time between consecutive training-batch starts: everything Lightning does per step."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, device
        self.starts: list[float] = []
        self.mem = Memory(device)
        self.peak: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(self.device)
        self.starts.append(time.perf_counter())
        if len(self.starts) == self.warmup + 1:
            self.mem.reset()

    def on_train_end(self, trainer, pl_module) -> None:
        self.peak = self.mem.peak_mb()

    @property
    def seconds_per_step(self) -> float:
        t = self.starts[self.warmup :]
        return statistics.median(b - a for a, b in zip(t, t[1:], strict=False))


def lightning_run(
    arch: str, d_in: int, d_sae: int, k: int, decoder: str, batch: int, warmup: int, steps: int,
    device: str, precision: str, seed: int = 0,
) -> tuple[float, float | None, float]:
    """(seconds per steady-state step, peak step memory, held-out FVU) of `sae_lab.train`."""
    sae = {"architecture": arch, "d_sae": d_sae}
    if arch in ("topk", "batchtopk"):
        sae.update(k=k, decoder=decoder)
    n_steps = warmup + steps + 1  # the last step's end is not a batch start
    synthetic = SyntheticConfig(d=d_in, n_features=4 * d_in, active=16, n_tokens=n_steps * batch)
    timer = StepTimer(warmup, device)
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = TrainConfig(
            sae=SAEConfig(**sae), data=DataConfig(synthetic=synthetic), batch_size=batch,
            max_tokens=n_steps * batch, lr_warmup_steps=2, val_every_steps=10**9,
            val_batches=4, progress_bar=False, seed=seed, out_dir=out_dir, precision=precision,
            device="cuda" if device == "cuda" else "cpu",
        )
        result = train(cfg, callbacks=[timer])
    return timer.seconds_per_step, timer.peak, result.metrics["fvu"]


# --- tables ------------------------------------------------------------------------------------


def fmt_row(
    name: str, sec: float, ref: float, batch: int, mem: float | None, extra: str = ""
) -> str:
    mem_s = f"{mem:8.0f}" if mem is not None else "       -"
    return f"  {name:<44} {batch / sec:10,.0f} {ref / sec:7.2f}x {mem_s}{extra}"


def throughput_table(args, device: str) -> float:
    """Table 1; returns the reference's seconds per step at the first size (for Table 2)."""
    print("\n## Table 1: TopK step throughput (tokens/s, ratio to the plain step, step memory MiB)")
    ref_first = None
    for d_sae in args.d_sae:
        for k in args.k:
            g = torch.Generator().manual_seed(0)
            batches = [torch.randn(args.batch, args.d_in, generator=g).to(device) for _ in range(3)]
            print(f"\nd_in={args.d_in} d_sae={d_sae} k={k} batch={args.batch}")
            print(f"  {'path':<44} {'tokens/s':>10} {'ratio':>8} {'mem MiB':>8}")
            torch.manual_seed(0)
            ref, mem = time_steps(plain_step_fn(args.d_in, d_sae, k, device), batches,
                                  args.warmup, args.steps, device)
            ref_first = ref_first or ref
            print(fmt_row("plain PyTorch TopK (reference)", ref, ref, args.batch, mem))
            rows = [
                ("sae_lab topk dense", "topk", "dense", 0.0),
                ("sae_lab topk sparse", "topk", "sparse", 0.0),
                ("sae_lab topk sparse, 10% dead (AuxK on)", "topk", "sparse", 0.1),
                ("sae_lab batchtopk sparse", "batchtopk", "sparse", 0.0),
            ]
            for name, arch, decoder, dead in rows:
                torch.manual_seed(0)
                step = sae_lab_step_fn(arch, args.d_in, d_sae, k, decoder, device,
                                       args.precision, dead)
                sec, mem = time_steps(step, batches, args.warmup, args.steps, device)
                print(fmt_row(name, sec, ref, args.batch, mem))
            if not args.no_lightning:
                sec, mem, _ = lightning_run("topk", args.d_in, d_sae, k, "sparse", args.batch,
                                            args.warmup + 1, args.steps, device, args.precision)
                print(fmt_row("sae_lab topk sparse, full Lightning path", sec, ref, args.batch,
                              mem))
    return ref_first


def architecture_table(args, device: str, ref: float) -> None:
    d_sae, k = args.d_sae[0], args.k[0]
    print(f"\n## Table 2: every architecture, full Lightning path, d_in={args.d_in} "
          f"d_sae={d_sae} k={k} batch={args.batch}, {args.arch_steps} steps on synthetic data")
    print(f"  {'architecture':<44} {'tokens/s':>10} {'ratio':>8} {'mem MiB':>8} {'val FVU':>9}")
    runs = [("relu", "dense"), ("topk", "sparse"), ("topk", "dense"), ("batchtopk", "sparse"),
            ("batchtopk", "dense"), ("gated", "dense"), ("jumprelu", "dense")]
    fvu = {}
    for arch, decoder in runs:
        warm = 2
        sec, mem, fvu[arch, decoder] = lightning_run(
            arch, args.d_in, d_sae, k, decoder, args.batch, warm, args.arch_steps - warm,
            device, args.precision,
        )
        name = arch + (f" ({decoder} decoder)" if arch in ("topk", "batchtopk") else "")
        print(fmt_row(name, sec, ref, args.batch, mem, f" {fvu[arch, decoder]:9.4f}"))
    for arch in ("topk", "batchtopk"):
        dense, sparse = fvu[arch, "dense"], fvu[arch, "sparse"]
        print(f"  {arch}: held-out FVU sparse {sparse:.4f} vs dense {dense:.4f} "
              f"(relative difference {abs(sparse - dense) / dense:.2%})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d_sae=6144, k=32 only; fewer steps")
    p.add_argument("--d-in", type=int, default=384)
    p.add_argument("--d-sae", type=int, nargs="+", default=None, help="default: 6144 24576")
    p.add_argument("--k", type=int, nargs="+", default=None, help="default: 32 128")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=None, help="timed steps per row (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--arch-steps", type=int, default=None, help="Table 2 steps (default 20)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--precision", choices=("32", "bf16-mixed"), default="32",
                   help="bf16-mixed: autocast on CUDA (ignored on CPU)")
    p.add_argument("--no-lightning", action="store_true", help="skip the Lightning rows")
    p.add_argument("--skip-architectures", action="store_true", help="skip Table 2")
    args = p.parse_args()
    args.d_sae = args.d_sae or ([6144] if args.quick else [6144, 24576])
    args.k = args.k or ([32] if args.quick else [32, 128])
    args.steps = args.steps or (3 if args.quick else 5)
    args.arch_steps = args.arch_steps or (6 if args.quick else 20)
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
    ref = throughput_table(args, device)
    if not (args.skip_architectures or args.no_lightning):
        architecture_table(args, device, ref)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average at the end {load:.2f}")


if __name__ == "__main__":
    main()
