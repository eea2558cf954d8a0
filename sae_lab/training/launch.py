"""`sae-lab train` with `parallel:` set: one SAE trained by latents x data processes on this
machine (torch.multiprocessing spawn; gloo on CPU, NCCL on CUDA, one GPU per rank).

Every rank builds and initialises the same whole SAE (rank 0's first batch decides, broadcast),
keeps its latents (sae.sharded.shard_sae) and runs the step of training/parallel.py on its part
of each batch: a shard set is split by shard over the data ranks, a live source by the model's
forward batches (each data rank runs its own model copy on its own contexts), an in-memory
array (synthetic, npy) by rows of each batch. At the end one ordinary SAE is
gathered and saved in out_dir/final, with metrics.json from the held-out rows, as a one-process
run writes them. Not yet here: periodic validation, checkpoints and --resume, loggers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from sae_lab.config import ConfigError
from sae_lab.data.datamodule import ShardDataModule
from sae_lab.data.live import LiveDataModule
from sae_lab.files import atomic_write_json, atomic_write_text
from sae_lab.lm.load import resolve_device
from sae_lab.sae import load
from sae_lab.sae.sharded import Mesh, gather_sae, shard_sae
from sae_lab.training.config import TrainConfig
from sae_lab.training.metrics import DEAD_FRAC
from sae_lab.training.module import SAEModule
from sae_lab.training.optim import optimizer
from sae_lab.training.parallel import init_process_group, train_step
from sae_lab.training.run import (
    TrainResult,
    build_module,
    evaluate_held_out,
    first_batch,
    make_datamodule,
)

READS_ITS_OWN = (ShardDataModule, LiveDataModule)
"""Sources whose data ranks read disjoint parts (shards; a live model's contexts); the others
(in-memory arrays) are read whole by every rank, which keeps its slice of each batch."""


def check(cfg: TrainConfig) -> None:
    """Settings a parallel run cannot take, as one-line ConfigErrors."""
    if cfg.nan_policy != "error":
        raise ConfigError("nan_policy: skip is not supported with parallel (a rank skipping a "
                          "step alone would stall the others)")


def train_parallel(cfg: TrainConfig) -> TrainResult:
    """Train one SAE over cfg.parallel.latents x cfg.parallel.data processes; returns what
    `training.run.train` returns, read back from out_dir."""
    check(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    with tempfile.TemporaryDirectory(prefix="sae_lab_rendezvous_") as tmp:
        mp.spawn(_spawned, args=(cfg, str(Path(tmp) / "rendezvous")), nprocs=cfg.parallel.ranks)
    import json

    saved = json.loads((out_dir / "metrics.json").read_text())
    held_out = saved.pop("held_out", "")
    return TrainResult(load(out_dir / "final"), saved, out_dir, held_out)


def _spawned(rank: int, cfg: TrainConfig, rendezvous: str) -> None:
    device = resolve_device(cfg.device)
    mesh = init_process_group(cfg.parallel, rank, rendezvous, device)
    try:
        run_rank(cfg, mesh, device)
    finally:
        dist.destroy_process_group()


def run_rank(cfg: TrainConfig, mesh: Mesh, device: str = "cpu") -> None:
    """This rank's part of a parallel run, in a process group already joined (see module
    docstring); rank 0 writes out_dir/final and metrics.json."""
    check(cfg)
    if device.startswith("cuda"):
        device = f"cuda:{torch.cuda.current_device()}"
    dm = make_datamodule(cfg)
    if isinstance(dm, READS_ITS_OWN):
        dm.node = (mesh.data_rank, mesh.data)  # each data rank reads its own shards / contexts
        dm.batch_size = cfg.batch_size // mesh.data
    module = build_module(cfg, dm)  # the same whole SAE on every rank (seeded)
    module.initialise(first_batch(dm))
    module.to(device)  # before the broadcast: NCCL moves CUDA tensors only
    for t in [*module.sae.state_dict().values(), module.input_scale]:
        dist.broadcast(t, src=0)  # rank 0's first batch decides, as in one process
    sae = shard_sae(module.sae, mesh)
    opt, sched = optimizer(sae, cfg)
    started, tokens = time.perf_counter(), 0
    for step, batch in zip(range(cfg.max_steps), _my_rows(dm, mesh, cfg.batch_size),
                           strict=False):
        x = sae.normalize_input(batch.to(device, sae.W_enc.dtype)
                                * module.input_scale.to(sae.W_enc.dtype))
        out = train_step(sae, opt, sched, x, step, cfg)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"step {step}: non-finite loss (NaN or inf)")
        tokens += cfg.batch_size
        if step % cfg.log_every_steps == 0:
            loss = float(sae.shard.data_mean(out.loss.detach()))
            if dist.get_rank() == 0:
                rate = tokens / (time.perf_counter() - started)
                print(f"step {step} loss {loss:.4g} tokens/s {rate:.0f}", flush=True)
    whole = gather_sae(sae)
    if dist.get_rank() == 0:
        _finish(cfg, module, whole, dm)
    dist.barrier()


def _my_rows(dm, mesh: Mesh, batch_size: int) -> Iterator[torch.Tensor]:
    """This data rank's rows of each batch: its own shards' batches, or its slice of the whole
    batch for a source that every rank reads whole."""
    batches = iter(dm.train_dataloader())
    if isinstance(dm, READS_ITS_OWN):
        yield from batches
        return
    part = batch_size // mesh.data
    for batch in batches:
        yield batch[mesh.data_rank * part:(mesh.data_rank + 1) * part]


def _finish(cfg: TrainConfig, module: SAEModule, whole, dm) -> None:
    module.sae = whole.cpu()
    module.cpu()
    sae = module.export_sae()
    metrics, held_out = evaluate_held_out(sae, dm, cfg.nan_policy)
    metrics[DEAD_FRAC] = sae.dead_mask.float().mean().item()
    metrics["tokens"] = float(cfg.max_steps * cfg.batch_size)
    metrics["skipped_batches"] = 0.0
    out_dir = Path(cfg.out_dir)
    sae.save(out_dir / "final")
    atomic_write_json(out_dir / "metrics.json", {**metrics, "held_out": held_out})
