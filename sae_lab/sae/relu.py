"""ReLU SAE with an L1 penalty weighted by decoder norms.

    z = ReLU(pre)
    L = ||x - x_hat||^2 + lambda * sum_i z_i ||W_dec[i]||

Bricken et al. 2023 ("Towards Monosemanticity") and Anthropic's April 2024 update, which puts the
decoder norm inside the penalty instead of constraining it, so W_dec rows are free to grow.

cfg.decoder picks how a training step is computed (same loss and gradients): "dense", the
reference below; "sparse", only the entries with pre > 0 (sae_lab.sae.sparse_penalty); "auto",
sparse once the last step's density was low enough.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.sae.config import ReLUConfig
from sae_lab.sae.registry import register
from sae_lab.sae.sparse_penalty import SparsePenalty, decode


@register
class ReLUSAE(SAE):
    config_cls = ReLUConfig
    dead_meaning = "had ReLU(pre) > 0 on none of the last sae.dead_tokens training tokens"
    unit_norm_decoder = False
    step_buffers = {"dense": 3.5, "eval": 2.1}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sparse = SparsePenalty()  # speed path; scratch buffer and last density, not saved

    def codes(self, x: Tensor) -> Tensor:
        return self.pre_acts(x).relu()

    @torch.no_grad()
    def init_near_data(self, x: Tensor) -> None:
        # W_enc = W_dec^T kept, both scaled by sqrt(a): with b_enc = 0 the output scales by a,
        # the least-squares factor (rows at norm ~0.35 on MiniLM at d_sae 16 d_in; SAELens
        # starts them at 0.1, Anthropic's April 2024 update)
        a = self.fit_scale(x)
        if a > 0:
            self.W_enc *= a**0.5
            self.W_dec *= a**0.5

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        if self._sparse.use_sparse(self.cfg.decoder):
            return self._sparse_loss(x, sparsity_scale)
        z = self.codes(x)  # [B, d_sae]
        x_hat = self.decode_normalized(z)
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        z_sum = z.sum(dim=0)  # [d_sae]: the penalty needs only column sums, no [B, d_sae] product
        sparsity = z_sum @ self.W_dec.norm(dim=1) / x.shape[0]
        active = z.detach() > 0
        n_active = active.sum(dim=-1)
        self._sparse.record(n_active.sum(), *z.shape)
        return self._output(recon, sparsity, sparsity_scale, x_hat, n_active.float().mean(),
                            active.any(dim=0), z_sum.detach().sum() / x.shape[0])

    def _sparse_loss(self, x: Tensor, sparsity_scale: float) -> TrainOutput:
        """The same loss and gradients from the entries with pre > 0 only (sparse_penalty)."""
        sel = self._sparse.select(x, self.W_enc, self.b_enc, self.b_dec, 0.0)
        z = sel.values  # [N], all > 0, so ReLU is the identity there, gradient included
        B = x.shape[0]
        x_hat = self.latent_sum(decode(z, sel, self.W_dec)) + self.b_dec
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        sparsity = (z * self.W_dec.norm(dim=1)[sel.latents]).sum() / B
        return self._output(recon, sparsity, sparsity_scale, x_hat,
                            torch.tensor(z.numel() / B), sel.pattern.fired(),
                            z.detach().sum() / B)

    def _output(self, recon: Tensor, sparsity: Tensor, sparsity_scale: float, x_hat: Tensor,
                l0: Tensor, fired: Tensor, l1: Tensor) -> TrainOutput:
        sparsity, l0, l1 = (self.latent_sum(t) for t in (sparsity, l0, l1))
        loss = recon + sparsity_scale * self.cfg.lam * sparsity
        parts = {"mse": recon.detach() / self.d_in, "l1": l1, "sparsity": sparsity.detach()}
        return TrainOutput(loss, x_hat, l0, fired, parts)
