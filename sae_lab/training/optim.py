"""The optimiser and learning-rate schedule of a training run (SAEModule's, and the sharded
step's in training/parallel.py, which runs without Lightning)."""

from __future__ import annotations

import torch

from sae_lab.sae.base import SAE
from sae_lab.training.config import TrainConfig
from sae_lab.training.schedules import lr_factor


def optimizer(sae: SAE, cfg: TrainConfig, fused: bool = True
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over the SAE's parameter groups and its per-step learning-rate schedule."""
    # fused Adam: one kernel for all parameters, ~4x faster than the loop on CPU (measured at
    # d_sae=6144: 12 -> 3 ms a step); not under a gradient scaler (training.precision.fused_adam).
    opt = torch.optim.Adam(sae.param_groups(cfg.lr), lr=cfg.lr, betas=cfg.adam_betas,
                           fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.lr_warmup_steps, cfg.max_steps, cfg.lr_decay_start)
    )
    return opt, sched
