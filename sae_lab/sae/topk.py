"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv 2406.04093).

    z     = ReLU(TopK_k(pre))                  keep the k largest pre-activations of each token
    L     = ||x - x_hat||^2 + aux_coef * L_aux
    L_aux = ||e - e_hat||^2,   e = x - x_hat (no gradient to the main path),
            e_hat = TopK_{k_aux}(pre restricted to dead latents) @ W_dec      (AuxK, section A.2)

k may start at k_start and decay to k over k_schedule_steps (linear or cosine).

cfg.decoder picks how a training step is computed; both give the same loss and gradients:
- "dense": the reference, written below as the equations;
- "sparse": the speed path in sae_lab.sae.sparse_topk (only the active latents are touched).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from sae_lab.sae import sparse
from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.sae.config import TopKConfig
from sae_lab.sae.registry import register
from sae_lab.sae.sparse_topk import Codes, SparseTopK, decode


def k_at_step(step: int, k: int, k_start: int, steps: int, shape: str = "linear") -> int:
    """k decays from k_start to k over `steps` steps (Gao et al. 2024 use a k warm-down)."""
    if not k_start or steps <= 0 or step >= steps:
        return k
    t = step / steps
    frac = 1 - t if shape == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return max(k, round(k + (k_start - k) * frac))



@register
class TopKSAE(SAE):
    config_cls = TopKConfig
    k_based = True
    saelens_architecture = "topk"
    step_buffers = {"dense": 3.5, "sparse": 1.0, "eval": 2.1}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sparse = SparseTopK()  # speed path; holds scratch buffers, never saved

    def current_k(self, step: int) -> int:
        c = self.cfg
        return k_at_step(step, c.k, c.k_start, c.k_schedule_steps, c.k_schedule)

    def select(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(values, indices), each [B, k]: the k largest pre-activations per token, ReLU'd."""
        values, indices = self.top_latents(pre, k)
        return values.relu(), indices

    def select_pattern(self, pre: Tensor, k: int) -> tuple[Tensor, sparse.SparsePattern]:
        """The selection of `select` as (values [N], pattern), for the sparse path."""
        values, indices = self.select(pre, k)
        pattern, order = sparse.SparsePattern.from_indices(indices, self.d_sae)
        return values.gather(1, order).flatten(), pattern

    def codes(self, x: Tensor) -> Tensor:
        values, indices = self.select(self.pre_acts(x), self.cfg.k)
        return self.densify(values, indices)

    def densify(self, values: Tensor, indices: Tensor) -> Tensor:
        z = values.new_zeros(values.shape[0], self.d_sae)
        return z.scatter(-1, indices, values)  # [B, d_sae]

    def decode_codes(self, codes: Codes) -> Tensor:
        """sum_j values[:, j] * W_dec[latents[:, j]], [B, d_in], without the bias."""
        if codes.pattern is not None:
            return self.latent_sum(decode(codes, self.W_dec))
        return self.latent_sum(self.densify(codes.values, codes.latents) @ self.W_dec)

    def dense_codes(self, x: Tensor, k: int) -> tuple[Codes, Tensor | None]:
        """(codes, AuxK reconstruction e_hat or None): the reference path."""
        pre = self.pre_acts(x)  # [B, d_sae]
        codes = Codes(*self.select(pre, k))
        dead = self.select_dead(pre)
        if dead is None:
            return codes, None
        values, j, dead_latents = dead
        return codes, self.decode_codes(Codes(values, dead_latents[j]))

    def reconstruction_loss(self, x: Tensor, codes: Codes) -> tuple[Tensor, Tensor]:
        """(||x - x_hat||^2 averaged over tokens, x_hat)."""
        x_hat = self.decode_codes(codes) + self.b_dec
        return (x_hat - x).pow(2).sum(dim=-1).mean(), x_hat

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        k = self.current_k(step)
        if self.cfg.decoder == "sparse":
            codes, e_hat = self._sparse.codes(self, x, k)
        else:
            codes, e_hat = self.dense_codes(x, k)
        recon, x_hat = self.reconstruction_loss(x, codes)
        aux = x_hat.new_zeros(())
        if e_hat is not None:
            aux = (e_hat - (x - x_hat).detach()).pow(2).sum(dim=-1).mean()
        B = x.shape[0]
        values = codes.values.detach()
        # TopK's reconstruction loss is the MSE itself; an architecture that sums several
        # reconstructions (Matryoshka) overrides reconstruction_loss, and only then is it redone.
        mse = recon if self.recon_is_mse else (x_hat.detach() - x).pow(2).sum(dim=-1).mean()
        parts = {
            "mse": mse.detach() / self.d_in,
            "l1": self.latent_sum(values.sum()) / B,  # values are ReLU'd: the L1 norm
            "aux": aux.detach(),
        }
        loss = recon + self.cfg.aux_coef * aux
        l0 = self.latent_sum((values > 0).sum().float()) / B
        return TrainOutput(loss, x_hat, l0, codes.fired(self.d_sae), parts, self.batch_stats(codes))

    @property
    def recon_is_mse(self) -> bool:
        return type(self).reconstruction_loss is TopKSAE.reconstruction_loss

    def batch_stats(self, codes: Codes) -> dict[str, Tensor] | None:
        """What `after_step` needs from the batch besides `fired`."""
        return None

    def saelens_cfg(self) -> dict[str, Any]:
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}

    def extra_metrics(self, step: int) -> dict[str, float]:
        return {"k": float(self.current_k(step))}
