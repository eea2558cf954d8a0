"""Matryoshka BatchTopK SAE (Bussmann, Nabeshima et al. 2025, "Learning Multi-Level Features with
Matryoshka Sparse Autoencoders", arXiv 2503.17547).

The latents are split into groups; prefix m = the first m latents is a dictionary of its own, and
every prefix must reconstruct x alone (section 3):

    z     = BatchTopK_k(ReLU(pre))                  selection over the whole batch
    x_m   = z[:, :m] @ W_dec[:m] + b_dec            each prefix end m = m_1 < ... < m_G = d_sae
    L     = sum_m ||x - x_m||^2 + aux_coef * L_aux  (AuxK on the full reconstruction)

so early latents learn general, frequent features and later ones refine them, instead of the
later ones absorbing the early ones' directions. Selection, AuxK, the k schedule and inference
(one global threshold, saved as a SAELens JumpReLU, as sae-lens saves its
MatryoshkaBatchTopK) are BatchTopK's.

The default groups (d_sae/16, /16, /8, /4, /2) are the authors' for LM activations, whose feature
frequencies fall off steeply. Where many features are equally frequent, a prefix smaller than
their number can only reconstruct x with blends of them, and the later latents learn corrections
to the blends: on flat synthetic data (256 features, 512 latents, 150k tokens) the default groups
found 0.63 of the features, prefixes (384, 512) 0.94 (tests/sae/test_known_answer.py). The loss is
the paper's sum over prefixes (as in sae-lens); dictionary_learning's trainer takes the mean,
which under Adam (steps blind to the loss scale) only weighs AuxK G times more.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor

from sae_lab.config import ConfigError, config, require
from sae_lab.sae.batchtopk import BatchTopKConfig, BatchTopKSAE
from sae_lab.sae.registry import register
from sae_lab.sae.sparse_topk import Codes


@config
class MatryoshkaConfig(BatchTopKConfig):
    architecture: Literal["matryoshka"] = "matryoshka"  # type: ignore[assignment]
    """Matryoshka BatchTopK: nested prefixes of the latents, each reconstructing x alone."""
    group_fractions: tuple[Annotated[float, Field(gt=0)], ...] = (1 / 16, 1 / 16, 1 / 8, 1 / 4,
                                                                  1 / 2)
    """Sizes of the latent groups as fractions of d_sae, summing to 1; prefix i ends after
    group i (default: prefixes of 1/16, 1/8, 1/4, 1/2 and all of d_sae)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isclose(sum(self.group_fractions), 1.0, rel_tol=1e-6),
                "sae.group_fractions", list(self.group_fractions), "fractions summing to 1")
        if self.d_in:
            ends = prefix_ends(self.group_fractions, self.latents)
            if len(set(ends)) < len(ends) or ends[0] == 0:
                raise ConfigError(f"sae.group_fractions={list(self.group_fractions)}: a group "
                                  f"of d_sae={self.latents} latents would be empty")


def prefix_ends(fractions: tuple[float, ...], d_sae: int) -> list[int]:
    """Where each nested prefix ends: cumulative fractions of d_sae, the last one d_sae."""
    ends, total = [], 0.0
    for f in fractions:
        total += f
        ends.append(round(total * d_sae))
    ends[-1] = d_sae
    return ends


@register
class MatryoshkaSAE(BatchTopKSAE):
    config_cls = MatryoshkaConfig
    step_buffers = {"dense": 9.0, "sparse": 1.5, "eval": 4.35}  # dense not measured: the largest

    @property
    def prefix_ends(self) -> list[int]:
        return prefix_ends(self.cfg.group_fractions, self.d_sae)

    def reconstruction_loss(self, x: Tensor, codes: Codes) -> tuple[Tensor, Tensor]:
        """(sum over prefixes m of ||x - x_m||^2, averaged over tokens; x_hat = x_{d_sae}).

        x_m is built group by group: x_m = x_{m'} + the group's own latents decoded."""
        loss, x_hat, start = x.new_zeros(()), self.b_dec.expand_as(x), 0
        for end in self.prefix_ends:
            group = codes.values * ((codes.latents >= start) & (codes.latents < end))
            x_hat = x_hat + self.decode_codes(codes._replace(values=group))
            loss = loss + (x_hat - x).pow(2).sum(dim=-1).mean()
            start = end
        return loss, x_hat
