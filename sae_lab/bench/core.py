"""core: reconstruction and sparsity over the whole bench set, and the model's loss with the SAE
spliced in; each number comes from sae_lab.evaluate (exact streamed sums, not batch means).

    fvu, cos, l0, l2_ratio, rel_bias   evaluate.EvalStats over every row
    unfired_frac   share of latents that fired on no row (dead on this set)
    dense_frac     share of latents that fired on more than `dense_above` of the rows (10%,
                   the line SAEBench draws between dense and sparse latents)
    density        per-latent firing frequency: the feature-density histogram
    ce_score, kl_score, delta_ce   evaluate.downstream_loss, for causal LMs only
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn

    from sae_lab.sae.base import SAE

DENSE_ABOVE = 0.1
RECON_KEYS = ("fvu", "cos", "l0", "l2_ratio", "rel_bias", "unfired_frac")
LOSS_KEYS = ("ce_score", "kl_score", "delta_ce", "kl_sae")


def reconstruction(sae: SAE, rows: Iterable[Tensor], dense_above: float = DENSE_ABOVE
                   ) -> tuple[dict[str, float], Tensor]:
    """(metrics, density [d_sae]) of `sae` over the activation batches `rows`."""
    import torch

    from sae_lab.evaluate import evaluate_sae

    with torch.no_grad():
        found = evaluate_sae(sae, rows, sae.W_enc.device)
    metrics = {k: found.metrics[k] for k in RECON_KEYS}
    metrics["dense_frac"] = float((found.density > dense_above).double().mean())
    metrics["rows"] = found.metrics["tokens"]
    return metrics, found.density


def downstream(sae: SAE, model: nn.Module, seqs: list[Any], layer: int, hook: str
               ) -> dict[str, float]:
    """CE loss recovered and KL with the SAE's reconstruction spliced in at (layer, hook)."""
    from sae_lab.evaluate import downstream_loss, sae_reconstruct

    found = downstream_loss(model, seqs, layer, hook, sae_reconstruct(sae), sae.d_in)
    return {k: found[k] for k in LOSS_KEYS}
