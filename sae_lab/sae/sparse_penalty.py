"""The speed path of penalty SAEs (ReLU-L1, JumpReLU, Gated): once they are sparse, a training
step touches only the entries that can carry a gradient, with the kernels TopK uses
(sae_lab.sae.sparse). The dense path in each architecture's file stays the reference.

Which entries carry a gradient, per architecture (everything else is 0 in z and in d loss/d pre):
- relu: pre > 0;
- jumprelu: pre > theta - eps, a superset of the active entries (pre > theta) and of the
  straight-through estimators' kernel support (|pre - theta| < eps/2), the margin absorbing
  rounding at the kernel's edge;
- gated: pi_gate > 0 (the L1 and the frozen-decoder aux act on ReLU(pi_gate); z is 0 elsewhere).

The dense pre-activations are computed once without autograd, into a buffer reused from step to
step; the selected entries get their gradient to W_enc, the encoder bias and b_dec from
`sparse.gather_pre_acts`, as in sparse_topk.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from sae_lab.sae import sparse

SPARSE_BELOW_DENSITY = 0.10
"""'auto' takes the sparse kernels when the last step's selected entries were fewer than this
fraction of B * d_sae. Measured crossover on CPU (ReLU step, d_in 384, d_sae 6144, B 2048,
1 thread, loaded machine; dense time / sparse time, median of 3): density 2% 3.1x, 5% 2.0x,
10% 1.25x, 20% 0.56x."""


class Selection:
    """Selected entries of a [B, d_sae] matrix: values[n] = pre[pattern.rows[n],
    pattern.latents[n]], in compressed-row order."""

    def __init__(self, values: Tensor, pattern: sparse.SparsePattern) -> None:
        self.values = values
        self.pattern = pattern

    @property
    def latents(self) -> Tensor:
        return self.pattern.latents

    def fired(self, where: Tensor) -> Tensor:
        """[d_sae] bool: latents of the entries where `where` [N] holds."""
        out = torch.zeros(self.pattern.d_sae, dtype=torch.bool, device=where.device)
        return out.index_fill_(0, self.latents[where], True)


class SparsePenalty:
    """Sparse training path of one penalty SAE: its CPU scratch buffer and the density measured
    on the last step, which picks the path of the next (never saved)."""

    def __init__(self) -> None:
        self._pre = sparse.Scratch()
        self.density = 1.0  # start dense: penalty SAEs start with about half the latents on

    def use_sparse(self, mode: Literal["auto", "sparse", "dense"]) -> bool:
        return mode == "sparse" or (mode == "auto" and self.density < SPARSE_BELOW_DENSITY)

    def record(self, n_selected: int | Tensor, n_rows: int, d_sae: int) -> None:
        self.density = float(n_selected) / max(n_rows * d_sae, 1)

    @torch.no_grad()
    def pre_acts_no_grad(self, x: Tensor, W_enc: Tensor, bias: Tensor, b_dec: Tensor) -> Tensor:
        """(x - b_dec) @ W_enc + bias, bit for bit as the dense path computes it, into a buffer
        reused across steps on CPU (a fresh [B, d_sae] tensor costs page faults)."""
        if x.device.type != "cpu" or sparse.autocast_enabled("cpu"):
            return (x - b_dec) @ W_enc + bias
        dtype = torch.result_type(x, W_enc)
        pre = self._pre.get((x.shape[0], W_enc.shape[1]), dtype, x.device)
        torch.mm(x - b_dec, W_enc, out=pre)
        return pre.add_(bias)

    def select(
        self, x: Tensor, W_enc: Tensor, bias: Tensor, b_dec: Tensor, cut: Tensor | float
    ) -> Selection:
        """The entries with pre > cut (cut a scalar or [d_sae]), carrying their gradient to
        W_enc, bias and b_dec; records the density for the next step's choice."""
        pre = self.pre_acts_no_grad(x, W_enc, bias, b_dec)  # [B, d_sae], no autograd
        B, d_sae = pre.shape
        with torch.no_grad():
            flat = (pre > cut).view(-1).nonzero().squeeze(1)  # [N], sorted row-major
            values = pre.view(-1)[flat]
        pattern = sparse.SparsePattern.from_flat(flat, B, d_sae)
        self.record(flat.numel(), B, d_sae)
        values = sparse.gather_pre_acts(values, pattern, x, W_enc, bias, b_dec)
        return Selection(values, pattern)


def decode(values: Tensor, selection: Selection, W_dec: Tensor) -> Tensor:
    """sum_n values[n] * W_dec[latents[n]] per token, [B, d_in], without the bias."""
    return sparse.decode(values, selection.pattern, W_dec)
