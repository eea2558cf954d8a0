"""ReLU SAE with an L1 penalty weighted by decoder norms.

    z = ReLU(pre)
    L = ||x - x_hat||^2 + lambda * sum_i z_i ||W_dec[i]||

Bricken et al. 2023 ("Towards Monosemanticity") and Anthropic's April 2024 update, which puts the
decoder norm inside the penalty instead of constraining it, so W_dec rows are free to grow.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from sae_lab.config import config
from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.sae.config import PenaltyConfig
from sae_lab.sae.registry import register


@config
class ReLUConfig(PenaltyConfig):
    architecture: Literal["relu"] = "relu"
    """ReLU with a decoder-norm-weighted L1 penalty."""


@register
class ReLUSAE(SAE):
    config_cls = ReLUConfig
    dead_meaning = "had ReLU(pre) > 0 on none of the last sae.dead_tokens training tokens"
    unit_norm_decoder = False

    def encode(self, x: Tensor) -> Tensor:
        return self.pre_acts(x).relu()

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        z = self.encode(x)
        x_hat = self.decode(z)
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        sparsity = (z * self.W_dec.norm(dim=1)).sum(dim=-1).mean()
        loss = recon + sparsity_scale * self.cfg.lam * sparsity
        active = z > 0
        parts = {
            "mse": recon.detach() / self.d_in,
            "l1": z.detach().sum(dim=-1).mean(),
            "sparsity": sparsity.detach(),
        }
        return TrainOutput(loss, x_hat, active.sum(dim=-1).float().mean(), active.any(dim=0), parts)
