"""The speed path of TopK-style training steps: same loss and gradients as the dense reference
in topk.py, computed from the selected entries only (kernels in sae_lab.sae.sparse; Gao et al.
2024, appendix D.2). Only the encoder product and the selection stay dense, and the dense
pre-activations [B, d_sae] are never kept for the backward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from sae_lab.sae import sparse

if TYPE_CHECKING:
    from sae_lab.sae.topk import TopKSAE

# AuxK uses dense products over the dead latents once k_aux >= n_dead / 8: the crossover with the
# sparse kernels measured on CPU (d_in=384, d_sae=6144, B=4096, k_aux=192, 1 thread, CPU time of
# AuxK's share of a step, dense block vs sparse): n_dead 614 0.41 vs 0.90 s, 1229 0.74 vs 1.03 s,
# 3072 1.54 vs 0.82 s. The sparse kernels' cost follows B * k_aux, the dense block's n_dead.
AUXK_DENSE_BLOCK_DENSITY = 8


class Codes(NamedTuple):
    """The selected latents of a batch: values[n] is the activation of latent latents[n].

    Dense path: both [B, m], row b holding token b's selection. Sparse path: both [N], in the
    order of `pattern` (compressed rows)."""

    values: Tensor
    latents: Tensor
    pattern: sparse.SparsePattern | None = None

    def prefix(self, m: int) -> Codes:
        """Only latents [0, m) (Matryoshka's nested dictionaries); same pattern, others zeroed."""
        return self._replace(values=self.values * (self.latents < m))

    def fired(self, d_sae: int) -> Tensor:
        """[d_sae] bool: latents with a positive value on some token."""
        out = torch.zeros(d_sae, dtype=torch.bool, device=self.values.device)
        out[self.latents[self.values.detach() > 0]] = True
        return out


class SparseTopK:
    """Sparse training path of one TopK-style SAE; holds its CPU scratch buffer (never saved)."""

    def __init__(self) -> None:
        self._pre = sparse.Scratch()

    def codes(self, sae: TopKSAE, x: Tensor, k: int) -> tuple[Codes, Tensor | None]:
        """(codes with gradients to the encoder, AuxK reconstruction e_hat or None)."""
        pre = self.pre_acts_no_grad(sae, x)  # [B, d_sae]: nothing dense is kept for backward
        values, pattern = sae.select_pattern(pre, k)
        values = attach(sae, values, pattern, x)
        dead = sae.select_dead(pre)
        del pre
        e_hat = None if dead is None else sae.latent_sum(auxk_decode(sae, x, *dead))
        return Codes(values, pattern.latents, pattern), e_hat

    @torch.no_grad()
    def pre_acts_no_grad(self, sae: TopKSAE, x: Tensor) -> Tensor:
        """`sae.pre_acts(x)`, bit for bit, written into a buffer reused across steps on CPU: a
        fresh [B, d_sae] tensor costs page faults worth ~7% of a sparse step (measured,
        d_sae=6144)."""
        if x.device.type != "cpu" or sparse.autocast_enabled("cpu"):
            return sae.pre_acts(x)
        dtype = torch.result_type(x, sae.W_enc)
        pre = self._pre.get((x.shape[0], sae.d_sae), dtype, x.device)
        torch.mm(x - sae.b_dec, sae.W_enc, out=pre)
        return pre.add_(sae.b_enc)


def attach(sae: TopKSAE, values: Tensor, pattern: sparse.SparsePattern, x: Tensor) -> Tensor:
    """ReLU'd selected pre-activations with their (sparse) gradient to the encoder.

    The values are ReLU'd already; ReLU again only to mask their gradient, which is the same for
    pre and ReLU(pre) (zero where pre <= 0).
    """
    return sparse.gather_pre_acts(values, pattern, x, sae.W_enc, sae.b_enc, sae.b_dec).relu()


def decode(codes: Codes, W_dec: Tensor) -> Tensor:
    """sum_n values[n] * W_dec[latents[n]] per token, [B, d_in], without the bias."""
    return sparse.decode(codes.values, codes.pattern, W_dec)


def auxk_decode(sae: TopKSAE, x: Tensor, values: Tensor, j: Tensor, dead: Tensor) -> Tensor:
    """AuxK's reconstruction e_hat [B, d_in] from the selection of `sae.select_dead`.

    AuxK picks k_aux (d_in/2 by default) of the n_dead dead latents per token: when that is a
    eighth of them or more, dense products restricted to the dead block are cheaper than the
    sparse kernels, and they give the same gradients.
    """
    if j.shape[1] * AUXK_DENSE_BLOCK_DENSITY < dead.numel():
        pattern, order = sparse.SparsePattern.from_indices(dead[j], sae.d_sae)
        flat = attach(sae, values.gather(1, order).flatten(), pattern, x)
        return sparse.decode(flat, pattern, sae.W_dec)
    all_dead = dead.numel() == sae.d_sae
    W_enc = sae.W_enc if all_dead else sae.W_enc[:, dead]  # [d_in, n_dead]
    W_dec = sae.W_dec if all_dead else sae.W_dec[dead]  # [n_dead, d_in]
    pre = (x - sae.b_dec) @ W_enc + sae.b_enc[dead]  # [B, n_dead]
    # values > 0: positive and, on a latent shard, among the k_aux of all shards
    z = torch.zeros_like(pre).scatter(1, j, pre.gather(1, j).relu() * (values > 0))
    return z @ W_dec
