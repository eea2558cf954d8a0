"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders", arXiv 2407.14435).

    z = pre * H(pre - theta),     theta = exp(log_threshold) > 0
    L = ||x - x_hat||^2 + lambda * ||z||_0,   ||z||_0 = sum_i H(pre_i - theta_i)

H has no useful gradient, so theta learns through straight-through estimators with a rectangle
kernel K(u) = 1[|u| < 1/2] of bandwidth eps (section 4, eqs. 11-12):
    d JumpReLU / d theta = -(theta / eps) K((pre - theta) / eps)
    d H(pre - theta) / d theta = -(1 / eps) K((pre - theta) / eps)

The paper's eps = theta_0 = 0.001 suit its input scale and billions of tokens. Here inputs are
normalised to E||x||^2 = d_in, so latents fire at O(1); eps = 0.1 and theta_0 = 0.5 let thresholds
settle within a few hundred steps (measured on the synthetic known-answer data, tests/), helped
by a learning rate 10x larger for the thresholds (threshold_lr_scale).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from sae_lab.config import config
from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.sae.config import PenaltyConfig
from sae_lab.sae.registry import register


@config
class JumpReLUConfig(PenaltyConfig):
    architecture: Literal["jumprelu"] = "jumprelu"
    """JumpReLU: per-latent learned thresholds, L0 penalty through straight-through estimators."""
    bandwidth: Annotated[float, Field(gt=0)] = 0.1
    """Kernel bandwidth epsilon of the straight-through estimators."""
    threshold_init: Annotated[float, Field(gt=0)] = 0.5
    """Initial threshold of every latent."""
    threshold_lr_scale: Annotated[float, Field(gt=0)] = 10.0
    """Learning rate of log_threshold as a multiple of lr."""
    k_aux: Annotated[int, Field(ge=0)] = 0
    """Dead latents used by the AuxK revival loss; 0 means d_in // 2 (Gao et al.)."""
    aux_coef: Annotated[float, Field(ge=0)] = 1 / 32
    """Weight of the AuxK revival loss on dead latents (0: off; Gao et al. use 1/32)."""


def _kernel(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_pre = grad * (pre > theta)
        grad_theta = -(theta / eps) * _kernel((pre - theta) / eps) * grad
        return grad_pre, grad_theta.sum(dim=0), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, theta: Tensor, eps: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, theta = ctx.saved_tensors
        eps = ctx.eps
        grad_theta = -(1.0 / eps) * _kernel((pre - theta) / eps) * grad
        return torch.zeros_like(pre), grad_theta.sum(dim=0), None


@register
class JumpReLUSAE(SAE):
    config_cls = JumpReLUConfig
    dead_meaning = "exceeded its threshold on none of the last sae.dead_tokens training tokens"
    saelens_architecture = "jumprelu"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        init = torch.full((self.d_sae,), math.log(self.cfg.threshold_init), dtype=self.W_enc.dtype)
        self.log_threshold = nn.Parameter(init)

    def param_groups(self, lr: float) -> list[dict]:
        # Adam moves log_threshold by about lr per step whatever the gradient's size, so at
        # lr ~ 4e-4 a threshold changes by a factor e^0.4 in 1000 steps: far too slow for runs
        # shorter than the paper's. A larger rate for the thresholds alone fixes that.
        rest = [p for n, p in self.named_parameters() if n != "log_threshold"]
        return [
            {"params": rest, "lr": lr},
            {"params": [self.log_threshold], "lr": lr * self.cfg.threshold_lr_scale},
        ]

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold)

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        pre = self.pre_acts(x)
        theta = self.threshold
        z = _JumpReLU.apply(pre, theta, self.cfg.bandwidth)
        x_hat = self.decode(z)
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        l0 = _Step.apply(pre, theta, self.cfg.bandwidth).sum(dim=-1).mean()
        loss = recon + sparsity_scale * self.cfg.lam * l0
        auxk = self.dead_aux_loss(pre, x, x_hat)  # revival (base.py)
        loss = loss + self.cfg.aux_coef * auxk
        active = z.detach() != 0
        parts = {
            "mse": recon.detach() / self.d_in,
            "l1": z.detach().abs().sum(dim=-1).mean(),
            "sparsity": l0.detach(),
            "auxk": auxk.detach(),
        }
        return TrainOutput(loss, x_hat, active.sum(dim=-1).float().mean(), active.any(dim=0), parts)

    @torch.no_grad()
    def saelens_tensors(self) -> dict[str, Any]:
        # SAELens: z = ReLU(pre) * 1[pre > ReLU(threshold)], equal to ours as threshold > 0
        return {**super().saelens_tensors(), "threshold": self.threshold}

    def extra_metrics(self, step: int) -> dict[str, float]:
        return {"threshold": float(self.threshold.detach().mean())}
