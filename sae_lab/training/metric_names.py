"""The metric names, without torch: what a sweep config may name is checked before torch loads.
sae_lab.training.metrics re-exports them."""

# Defined here once: the LightningModule logs them (val/<name>), sweeps report
# and rank on them, `sae-lab eval` writes them.
FVU, MSE, COS, L0, L1 = "fvu", "mse", "cos", "l0", "l1"
DEAD_FRAC = "dead_frac"
"""Fraction of latents that fired on none of the last sae.dead_tokens training tokens."""
OBJECTIVE = "objective"
"""A sweep's default score: fvu + l0_weight * l0 / d_in (sweep.space.objective)."""
RECON_METRICS = (FVU, MSE, COS, L0, L1)
"""What ReconStats.compute returns."""
VAL_METRICS = (FVU, MSE, L0, L1, DEAD_FRAC)
"""What every sweep trial reports from validation (logged as val/<name> by the LightningModule)."""
SWEEP_METRICS = (OBJECTIVE, *VAL_METRICS)
"""What a sweep may rank trials on."""
