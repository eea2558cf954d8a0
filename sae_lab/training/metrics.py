"""Reconstruction metrics, accumulated exactly over any number of batches.

    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2      (mean over the whole set, not zero)
    MSE = sum ||x - x_hat||^2 / (N * d_in)
    L0  = mean number of non-zero latents per token
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sae_lab.sae.base import SAE

from sae_lab.training.metric_names import (  # noqa: F401  (re-exported)
    COS,
    DEAD_FRAC,
    FVU,
    L0,
    L1,
    MSE,
    OBJECTIVE,
    RECON_METRICS,
    SWEEP_METRICS,
    VAL_METRICS,
)

Stats = TypeVar("Stats")


def objective(fvu: float, l0: float, d_in: int, l0_weight: float) -> float:
    """The early-stopping and `best/` score: fvu + l0_weight * l0 / d_in (lower is better).

    Raw FVU always favours the densest SAE, since more active latents reconstruct better. This
    prices sparsity instead: one more active latent per token must buy at least l0_weight / d_in
    of FVU. Iso-objective lines in the (L0/d_in, FVU) plane have slope -l0_weight, so the score
    picks out the point of the Pareto frontier where the frontier has that slope, and trials at
    different L0 are compared on the same exchange rate. Dividing by d_in makes the weight mean
    the same for models of any width. l0_weight -> 0 gives back raw FVU.
    """
    return fvu + l0_weight * l0 / d_in


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained of one batch, [B, d] x [B, d] -> scalar."""
    x, x_hat = x.double(), x_hat.double()
    return (x - x_hat).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum()


def l0(z: Tensor) -> Tensor:
    return (z != 0).sum(dim=-1).double().mean()


class ReconStats:
    """Sums that give FVU, MSE, cosine, L0 and L1 over a whole evaluation set."""

    def __init__(self) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.sum_x: Tensor | None = None
        self.sum_sq_x = 0.0
        self.cos = 0.0
        self.l0 = 0.0
        self.l1 = 0.0

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, z: Tensor | None = None) -> None:
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        self.sq_err += (x - x_hat).pow(2).sum().item()
        s = x.sum(dim=0).cpu()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_sq_x += x.pow(2).sum().item()
        self.cos += torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).sum().item()
        if z is not None:
            # Row sums in z's dtype, then float64: a float64 copy of z (or z != 0, z.abs()) would
            # be the largest buffer of a held-out evaluation at 65k latents.
            self.l0 += int(torch.count_nonzero(z))
            self.l1 += torch.linalg.vector_norm(z, ord=1, dim=-1).double().sum().item()

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no rows were evaluated (empty validation data?)")
        d = self.sum_x.numel()
        total_var = self.sum_sq_x - self.sum_x.pow(2).sum().item() / self.n
        return {
            FVU: self.sq_err / total_var if total_var > 0 else float("nan"),
            MSE: self.sq_err / (self.n * d),
            COS: self.cos / self.n,
            L0: self.l0 / self.n,
            L1: self.l1 / self.n,
        }


@torch.no_grad()
def stream_stats(sae: SAE, batches: Iterable[Tensor], stats: Stats, max_batches: int = 0
                 ) -> Stats:
    """The one evaluation loop: [B, d_in] batches through `sae` (in eval mode, on its device and
    dtype) into `stats.update(x, x_hat, z)`; at most `max_batches` batches when > 0. Held-out
    metrics after training (train.run.evaluate_rows) and `sae-lab eval` (evaluate.evaluate_sae)
    both run it, each with its own sums (ReconStats, evaluate.EvalStats)."""
    sae.eval()
    device, dtype = sae.W_enc.device, sae.W_enc.dtype
    for x in itertools.islice(batches, max_batches or None):
        if x.shape[-1] != sae.d_in:
            raise ValueError(f"activations have width {x.shape[-1]}; the SAE has d_in={sae.d_in}")
        x = x.to(device, dtype)
        z = sae.encode(x)  # [B, d_sae]
        stats.update(x, sae.decode(z, x), z)
        del z  # or it would sit beside the next batch's encode: one [B, d_sae] buffer more
    return stats
