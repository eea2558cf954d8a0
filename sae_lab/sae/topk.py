"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv 2406.04093).

    z     = ReLU(TopK_k(pre))                  keep the k largest pre-activations of each token
    L     = ||x - x_hat||^2 + aux_coef * L_aux
    L_aux = ||e - e_hat||^2,   e = x - x_hat (no gradient to the main path),
            e_hat = TopK_{k_aux}(pre restricted to dead latents) @ W_dec      (AuxK, section A.2)

k may start at k_start and decay to k over k_schedule_steps (linear or cosine).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.schedules import k_at_step

TOPK_FIELDS = frozenset(
    {"k", "k_start", "k_schedule_steps", "k_schedule", "k_aux", "aux_coef", "decoder"}
)


class TopKSAE(SAE):
    name = "topk"
    uses = TOPK_FIELDS

    def current_k(self, step: int) -> int:
        c = self.cfg
        return k_at_step(step, c.k, c.k_start, c.k_schedule_steps, c.k_schedule)

    def select(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(values, indices), each [B, k]: the k largest pre-activations per token, ReLU'd."""
        values, indices = pre.topk(k, dim=-1, sorted=False)
        return values.relu(), indices

    def encode(self, x: Tensor) -> Tensor:
        values, indices = self.select(self.pre_acts(x), self.cfg.k)
        return self.densify(values, indices)

    def densify(self, values: Tensor, indices: Tensor) -> Tensor:
        z = values.new_zeros(values.shape[0], self.d_sae)
        return z.scatter(-1, indices, values)  # [B, d_sae]

    def decode_codes(self, values: Tensor, indices: Tensor) -> Tensor:
        """sum_j values[:, j] * W_dec[indices[:, j]], [B, d_in], without the bias."""
        return self.densify(values, indices) @ self.W_dec

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        pre = self.pre_acts(x)
        values, indices = self.select(pre, self.current_k(step))
        x_hat = self.decode_codes(values, indices) + self.b_dec
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        aux = self.auxk_loss(x, x_hat, pre)
        active = values > 0
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[indices[active]] = True
        self.update_dead(fired, x.shape[0])
        parts = {
            "mse": recon.detach() / self.d_in,
            "l1": values.detach().abs().sum(dim=-1).mean(),
            "aux": aux.detach(),
        }
        loss = recon + self.cfg.aux_coef * aux
        return TrainOutput(loss, x_hat, active.sum(dim=-1).float().mean(), fired, parts)

    def auxk_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor) -> Tensor:
        dead = self.dead_mask
        n_dead = int(dead.sum())
        if n_dead == 0 or self.cfg.aux_coef == 0:
            return pre.new_zeros(())
        k_aux = min(self.cfg.k_aux or self.d_in // 2, n_dead)
        e = (x - x_hat).detach()
        values, indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False)
        e_hat = self.decode_codes(values.relu(), indices)
        return (e_hat - e).pow(2).sum(dim=-1).mean()

    def extra_metrics(self, step: int) -> dict[str, float]:
        return {"k": float(self.current_k(step))}
