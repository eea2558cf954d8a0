"""One training step of an SAE that may be sharded over latents and data (sae_lab.sae.sharded),
in the order a Lightning step of SAEModule takes:

    loss = training_loss(x)     after_step (dead counters, thresholds)     backward
    reduce_grads (b_dec over latent ranks, mean over data ranks)     remove_parallel_grads
    clip the global gradient norm     Adam step     lr schedule step     normalize_decoder
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.sae.sharded import Mesh, grad_norm, reduce_grads
from sae_lab.training.config import ParallelConfig, TrainConfig
from sae_lab.training.schedules import warmup_factor


def clip_grad_norm(sae: SAE, max_norm: float) -> Tensor:
    """Scale all gradients so that their global 2-norm is at most max_norm (the rule of
    `torch.nn.utils.clip_grad_norm_`, which Lightning's gradient_clip_val applies); returns the
    norm before clipping."""
    norm = grad_norm(sae)
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for p in sae.parameters():
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.dtype))
    return norm


def train_step(sae: SAE, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               x: Tensor, step: int, cfg: TrainConfig) -> TrainOutput:
    """One optimisation step on x (this rank's part of the batch, as `normalize_input` gives
    it); sharded or not, the same maths as one process on the whole batch."""
    out = sae.training_loss(x, step, warmup_factor(step, cfg.sparsity_warmup_steps))
    sae.after_step(out, step)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if sae.shard is not None:
        reduce_grads(sae)
    sae.remove_parallel_grads()
    if cfg.grad_clip:
        clip_grad_norm(sae, cfg.grad_clip)
    opt.step()
    sched.step()
    sae.normalize_decoder()
    return out


def init_process_group(parallel: ParallelConfig, rank: int, init_file: str,
                       device: str = "cpu") -> Mesh:
    """Join the run's processes (gloo on CPU, NCCL on CUDA) through a rendezvous file, and
    place this rank on the mesh."""
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, init_method=f"file://{os.path.abspath(init_file)}",
                            rank=rank, world_size=parallel.ranks,
                            timeout=timedelta(minutes=10))
    return Mesh(parallel.latents, parallel.data)
