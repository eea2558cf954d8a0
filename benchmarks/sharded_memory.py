"""Memory and speed of one TopK SAE split over latent ranks, against one process, on CPU (gloo).

    python benchmarks/sharded_memory.py                  # 65,536 latents, d_in 3072, batch 4096
    python benchmarks/sharded_memory.py --latents 8192 --d-in 512 --batch 1024 --steps 5

Each configuration runs in fresh processes (torch.multiprocessing spawn): the one-process SAE,
then --ranks ranks each holding latents / ranks of them (every rank sees the whole batch). After
setup and one warm-up step the peak RSS is reset (/proc/self/clear_refs), so the peak printed is
that of the training steps (weights, gradients, Adam moments and a step's buffers); the peak of
setup and warm-up (which includes building the whole SAE before sharding it) is printed beside
it. Prints both runs and the ratios: peak RSS per rank / one-process peak, tokens/s / one-process
tokens/s (each process runs --threads threads: the ranks together use --ranks times the cores of
the one process). Needs about (8 + 8 / ranks) x 4 x latents x d_in bytes of RAM (the runs are
one after the other); run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _peak_kib() -> tuple[int, int]:
    """(VmHWM, VmRSS) of this process in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _run(rank: int, world: int, args: argparse.Namespace, tmp: str) -> None:
    from sae_lab import ARCHITECTURES, sae_config
    from sae_lab.sae.sharded import Mesh, shard_sae
    from sae_lab.training.config import TrainConfig
    from sae_lab.training.optim import optimizer
    from sae_lab.training.parallel import train_step

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=args.batch, max_tokens=args.batch * 1000, lr_warmup_steps=0)
    sae = ARCHITECTURES["topk"](sae_config("topk", d_in=args.d_in, d_sae=args.latents, k=args.k))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank,
                                world_size=world)
        sae = shard_sae(sae, Mesh(latents=world))
    opt, sched = optimizer(sae, cfg)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(args.batch, args.d_in, generator=gen) for _ in range(2)]
    train_step(sae, opt, sched, batches[0], 0, cfg)  # warm-up: Adam's moments, scratch buffers
    lifetime, _ = _peak_kib()
    _reset_peak()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for step in range(args.steps):
        train_step(sae, opt, sched, batches[step % 2], step + 1, cfg)
    seconds = time.perf_counter() - start
    peak, _ = _peak_kib()
    result = {"peak_gib": peak / 2**20, "setup_peak_gib": lifetime / 2**20,
              "tokens_per_s": args.steps * args.batch / seconds}
    Path(tmp, f"rank{rank}.json").write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="sharded_memory_") as tmp:
        mp.spawn(_run, args=(world, args, tmp), nprocs=world)
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latents", type=int, default=65_536)
    p.add_argument("--d-in", type=int, default=3072)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = p.parse_args()
    shape = f"TopK {args.latents} latents, d_in {args.d_in}, batch {args.batch}, k {args.k}"
    one = measure(1, args)[0]
    ranks = measure(args.ranks, args)
    print(f"{shape}, {args.steps} steps, {args.threads} thread(s) per process")
    print(f"  1 process:  peak RSS {one['peak_gib']:.2f} GiB (setup "
          f"{one['setup_peak_gib']:.2f}), {one['tokens_per_s']:.0f} tokens/s")
    for r, res in enumerate(ranks):
        print(f"  rank {r}/{args.ranks}: peak RSS {res['peak_gib']:.2f} GiB (setup "
              f"{res['setup_peak_gib']:.2f}), {res['tokens_per_s']:.0f} tokens/s")
    worst = max(res["peak_gib"] for res in ranks)
    slowest = min(res["tokens_per_s"] for res in ranks)
    print(f"  ratios: peak RSS per rank / one process {worst / one['peak_gib']:.2f}; "
          f"tokens/s {args.ranks} ranks / one process {slowest / one['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
