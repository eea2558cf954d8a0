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

from torch import Tensor

from sae_lab.sae.batchtopk import BatchTopKSAE
from sae_lab.sae.config import MatryoshkaConfig, prefix_ends
from sae_lab.sae.registry import register
from sae_lab.sae.sparse_topk import Codes


@register
class MatryoshkaSAE(BatchTopKSAE):
    config_cls = MatryoshkaConfig
    step_buffers = {"dense": 9.0, "sparse": 1.5, "eval": 4.35}  # dense not measured: the largest

    @property
    def prefix_ends(self) -> list[int]:
        return prefix_ends(self.cfg.group_fractions, self.cfg.latents)  # of all shards

    def reconstruction_loss(self, x: Tensor, codes: Codes) -> tuple[Tensor, Tensor]:
        """(sum over prefixes m of ||x - x_m||^2, averaged over tokens; x_hat = x_{d_sae}).

        x_m is built group by group: x_m = x_{m'} + the group's own latents decoded."""
        loss, x_hat, start = x.new_zeros(()), self.b_dec.expand_as(x), 0
        latents = codes.latents + self.latent_offset
        for end in self.prefix_ends:
            group = codes.values * ((latents >= start) & (latents < end))
            x_hat = x_hat + self.decode_codes(codes._replace(values=group))
            loss = loss + (x_hat - x).pow(2).sum(dim=-1).mean()
            start = end
        return loss, x_hat
