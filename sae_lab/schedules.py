"""Step -> value schedules: k decay, learning rate, sparsity warm-up."""

from __future__ import annotations

import math


def k_at_step(step: int, k: int, k_start: int, steps: int, shape: str = "linear") -> int:
    """k decays from k_start to k over `steps` steps (Gao et al. 2024 use a k warm-down)."""
    if not k_start or steps <= 0 or step >= steps:
        return k
    t = step / steps
    frac = 1 - t if shape == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return max(k, round(k + (k_start - k) * frac))


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay_start: float) -> float:
    """Linear warm-up, constant, then linear decay to 0 over the last (1 - decay_start) of the
    steps."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    start = int(decay_start * total_steps)
    if total_steps <= 0 or step < start or decay_start >= 1:
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - start))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear 0 -> 1 over warmup_steps (sparsity coefficient warm-up)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)
