"""Reconstruction metrics, accumulated exactly over any number of batches.

    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2      (mean over the whole set, not zero)
    MSE = sum ||x - x_hat||^2 / (N * d_in)
    L0  = mean number of non-zero latents per token
"""

from __future__ import annotations

import torch
from torch import Tensor


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
            self.l0 += (z != 0).sum().item()
            self.l1 += z.abs().double().sum().item()

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no rows were evaluated (empty validation data?)")
        d = self.sum_x.numel()
        total_var = self.sum_sq_x - self.sum_x.pow(2).sum().item() / self.n
        return {
            "fvu": self.sq_err / total_var if total_var > 0 else float("nan"),
            "mse": self.sq_err / (self.n * d),
            "cos": self.cos / self.n,
            "l0": self.l0 / self.n,
            "l1": self.l1 / self.n,
        }
