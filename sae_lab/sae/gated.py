"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders", arXiv 2404.16014).

    pi_gate = (x - b_dec) @ W_enc + b_gate                       which latents are on
    pi_mag  = (x - b_dec) @ (W_enc * exp(r_mag)) + b_mag         how strongly (weights shared)
    z       = 1[pi_gate > 0] * ReLU(pi_mag)
    L = ||x - x_hat||^2 + lambda * ||ReLU(pi_gate) * ||W_dec rows|| ||_1
        + ||x - x_hat_frozen(ReLU(pi_gate))||^2        (eq. 8: aux through a frozen decoder)

The gate path has no gradient through the Heaviside step; the L1 and aux terms train it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sae_lab.config import config
from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.sae.config import PenaltyConfig
from sae_lab.sae.registry import register


@config
class GatedConfig(PenaltyConfig):
    architecture: Literal["gated"] = "gated"
    """Gated SAE: a gate path picks latents, a magnitude path sizes them."""
    sparsity_coef: Annotated[float, Field(ge=0)] = 3.0
    """Sparsity coefficient lambda of the gate path's L1 penalty."""
    k_aux: Annotated[int, Field(ge=0)] = 0
    """Dead latents used by the AuxK revival loss; 0 means d_in // 2 (Gao et al.)."""
    aux_coef: Annotated[float, Field(ge=0)] = 1 / 32
    """Weight of the AuxK revival loss on dead latents (0: off; Gao et al. use 1/32)."""


@register
class GatedSAE(SAE):
    config_cls = GatedConfig
    dead_meaning = ("had an open gate and a positive magnitude on none of the last "
                    "sae.dead_tokens training tokens")
    saelens_architecture = "gated"
    has_b_enc = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        dtype = self.W_enc.dtype
        self.b_gate = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.r_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))

    def gate_and_mag(self, x: Tensor) -> tuple[Tensor, Tensor]:
        centred = x - self.b_dec
        pi_gate = centred @ self.W_enc + self.b_gate  # [B, d_sae]
        pi_mag = centred @ (self.W_enc * self.r_mag.exp()) + self.b_mag  # [B, d_sae]
        return pi_gate, pi_mag

    def encode(self, x: Tensor) -> Tensor:
        pi_gate, pi_mag = self.gate_and_mag(x)
        return (pi_gate > 0).to(pi_mag.dtype) * pi_mag.relu()

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        pi_gate, pi_mag = self.gate_and_mag(x)
        active = pi_gate > 0
        z = active.to(pi_mag.dtype) * pi_mag.relu()
        x_hat = self.decode(z)
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        gate_acts = pi_gate.relu()
        sparsity = (gate_acts * self.W_dec.norm(dim=1)).sum(dim=-1).mean()
        x_hat_gate = gate_acts @ self.W_dec.detach() + self.b_dec.detach()
        aux = (x_hat_gate - x).pow(2).sum(dim=-1).mean()
        loss = recon + sparsity_scale * self.cfg.lam * sparsity + aux
        # revival (base.py): a dead latent's gate is shut, so ReLU(pi_gate) has no gradient; its
        # would-be magnitude pi_mag shares W_enc with the gate and does
        auxk = self.dead_aux_loss(pi_mag, x, x_hat)
        loss = loss + self.cfg.aux_coef * auxk
        fired = (active & (z > 0)).any(dim=0)
        parts = {
            "mse": recon.detach() / self.d_in,
            "l1": z.detach().sum(dim=-1).mean(),
            "sparsity": sparsity.detach(),
            "aux": aux.detach(),
            "auxk": auxk.detach(),
        }
        return TrainOutput(loss, x_hat, (z > 0).sum(dim=-1).float().mean(), fired, parts)

    @torch.no_grad()
    def saelens_tensors(self) -> dict[str, Tensor]:
        return {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
                "b_gate": self.b_gate, "r_mag": self.r_mag, "b_mag": self.b_mag}

    def _fold_extra(self, scale: float) -> None:
        # pi_mag uses W_enc * exp(r_mag), already scaled through W_enc; b_gate, b_mag act on z.
        pass
