"""BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders", arXiv 2412.06410).

Training keeps the k * B largest ReLU(pre) across the whole batch, so tokens get a variable number
of latents with k on average. Inference cannot look at a batch: it uses one global threshold,

    z = ReLU(pre) * 1[pre > threshold],

where threshold is an EMA, over training batches, of the smallest activation the batch kept.
Everything else (AuxK, k schedule) is TopK's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_lab.sae import sparse
from sae_lab.sae.topk import TOPK_FIELDS, TopKSAE


class BatchTopKSAE(TopKSAE):
    name = "batchtopk"
    uses = TOPK_FIELDS | {"threshold_momentum"}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # 0 until the first training batch has estimated it.
        self.register_buffer("threshold", torch.zeros((), dtype=self.W_enc.dtype))

    def keep(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(values, flat_index) of the k * B largest ReLU(pre) over the batch, positive ones only;
        flat_index (b * d_sae + i) is sorted. Updates the inference threshold in training."""
        with torch.no_grad():
            values, flat_index = sparse.top_positive_flat(pre, k * pre.shape[0])
        if self.training:
            self._update_threshold(values)
        return values, flat_index

    def select(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(values, indices), each [B, m]: each row's kept latents, zero-padded to the busiest
        row (the dense path's form)."""
        _, flat_index = self.keep(pre, k)
        acts = pre.relu()
        keep = torch.zeros_like(acts, dtype=torch.bool).flatten()
        keep[flat_index] = True
        keep = keep.view_as(acts)
        m = max(int(keep.sum(dim=-1).max()), 1)
        values, indices = acts.masked_fill(~keep, 0).topk(m, dim=-1, sorted=False)
        return values, indices

    def select_pattern(self, pre: Tensor, k: int) -> tuple[Tensor, sparse.SparsePattern]:
        """The selection of `select` as (values [N], pattern): flat, no padding."""
        values, flat_index = self.keep(pre, k)
        return values, sparse.SparsePattern.from_flat(flat_index, pre.shape[0], self.d_sae)

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().to(self.threshold.dtype)
        if self.threshold == 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, 1 - self.cfg.threshold_momentum)

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_acts(x)
        if self.training:
            return self.densify(*self.select(pre, self.cfg.k))
        return pre.relu() * (pre > self.threshold)

    def extra_metrics(self, step: int) -> dict[str, float]:
        return {**super().extra_metrics(step), "threshold": float(self.threshold)}
