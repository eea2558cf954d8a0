"""Step -> value schedules: learning rate and sparsity warm-up (TopK's k schedule is in
sae_lab.sae.topk)."""

from __future__ import annotations


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
