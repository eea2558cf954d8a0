"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv 2406.04093).

    z     = ReLU(TopK_k(pre))                  keep the k largest pre-activations of each token
    L     = ||x - x_hat||^2 + aux_coef * L_aux
    L_aux = ||e - e_hat||^2,   e = x - x_hat (no gradient to the main path),
            e_hat = TopK_{k_aux}(pre restricted to dead latents) @ W_dec      (AuxK, section A.2)

k may start at k_start and decay to k over k_schedule_steps (linear or cosine).

cfg.decoder picks how a training step is computed; both give the same loss and gradients:
- "dense": scatter the codes into z [B, d_sae] and let autograd differentiate the dense products;
- "sparse": only the encoder product and the selection are dense; decoding, and every gradient,
  touch the active latents only (sae_lab.sae.sparse; Gao et al. appendix D.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_lab.sae import sparse
from sae_lab.sae.base import SAE, TrainOutput
from sae_lab.schedules import k_at_step

# On the sparse path AuxK uses dense products over the dead latents once k_aux >= n_dead / 3: the
# crossover with the sparse kernels measured on CPU (d_in=384, d_sae=6144, B=4096, k_aux=192).
AUXK_DENSE_BLOCK_DENSITY = 3

TOPK_FIELDS = frozenset(
    {"k", "k_start", "k_schedule_steps", "k_schedule", "k_aux", "aux_coef", "decoder"}
)


class TopKSAE(SAE):
    name = "topk"
    uses = TOPK_FIELDS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pre_scratch = sparse.Scratch()  # not a parameter or buffer: never saved

    def current_k(self, step: int) -> int:
        c = self.cfg
        return k_at_step(step, c.k, c.k_start, c.k_schedule_steps, c.k_schedule)

    def select(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(values, indices), each [B, k]: the k largest pre-activations per token, ReLU'd."""
        values, indices = sparse.topk_rows(pre, k)
        return values.relu(), indices

    def select_pattern(self, pre: Tensor, k: int) -> tuple[Tensor, sparse.SparsePattern]:
        """The selection of `select` as (values [N], pattern), for the sparse path."""
        values, indices = self.select(pre, k)
        pattern, order = sparse.SparsePattern.from_indices(indices, self.d_sae)
        return values.gather(1, order).flatten(), pattern

    def select_dead(self, pre: Tensor) -> tuple[Tensor, Tensor] | None:
        """(values, indices) [B, k_aux]: AuxK's largest pre-activations among dead latents, ReLU'd;
        None when no latent is dead or the AuxK loss is off."""
        selected = self._select_dead(pre)
        if selected is None:
            return None
        values, j, dead = selected
        return values, dead[j]

    def _select_dead(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """(values, j, dead): `select_dead` with indices j [B, k_aux] into dead [n_dead]."""
        if self.cfg.aux_coef == 0:
            return None
        dead = self.dead_mask.nonzero().squeeze(1)  # [n_dead]
        n_dead = dead.numel()
        if n_dead == 0:
            return None
        k_aux = min(self.cfg.k_aux or self.d_in // 2, n_dead)
        block = pre if n_dead == self.d_sae else pre.index_select(1, dead)  # [B, n_dead]
        values, j = sparse.topk_rows(block, k_aux)
        return values.relu(), j, dead

    def encode(self, x: Tensor) -> Tensor:
        values, indices = self.select(self.pre_acts(x), self.cfg.k)
        return self.densify(values, indices)

    def densify(self, values: Tensor, indices: Tensor) -> Tensor:
        z = values.new_zeros(values.shape[0], self.d_sae)
        return z.scatter(-1, indices, values)  # [B, d_sae]

    def decode_codes(self, values: Tensor, indices: Tensor) -> Tensor:
        """sum_j values[:, j] * W_dec[indices[:, j]], [B, d_in], without the bias (dense path)."""
        return self.densify(values, indices) @ self.W_dec

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        k = self.current_k(step)
        if self.cfg.decoder == "sparse":
            x_hat, e_hat, values, fired = self._sparse_step(x, k)
        else:
            x_hat, e_hat, values, fired = self._dense_step(x, k)
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        aux = x_hat.new_zeros(())
        if e_hat is not None:
            aux = (e_hat - (x - x_hat).detach()).pow(2).sum(dim=-1).mean()
        self.update_dead(fired, x.shape[0])
        B = x.shape[0]
        parts = {
            "mse": recon.detach() / self.d_in,
            "l1": values.detach().sum() / B,  # values are ReLU'd, so this is the L1 norm
            "aux": aux.detach(),
        }
        loss = recon + self.cfg.aux_coef * aux
        l0 = (values.detach() > 0).sum().float() / B
        return TrainOutput(loss, x_hat, l0, fired, parts)

    def _dense_step(self, x: Tensor, k: int) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """x_hat, e_hat (AuxK reconstruction or None), values, fired: the reference path."""
        pre = self.pre_acts(x)  # [B, d_sae]
        values, indices = self.select(pre, k)
        x_hat = self.decode_codes(values, indices) + self.b_dec
        dead = self.select_dead(pre)
        e_hat = None if dead is None else self.decode_codes(*dead)
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[indices[values > 0]] = True
        return x_hat, e_hat, values, fired

    def _sparse_step(self, x: Tensor, k: int) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        """Same as `_dense_step`, with gradients computed from the selected entries only."""
        pre = self._pre_acts_no_grad(x)  # [B, d_sae]: nothing dense is kept for backward
        values, pattern = self.select_pattern(pre, k)
        values = self._attach(values, pattern, x)
        x_hat = sparse.decode(values, pattern, self.W_dec) + self.b_dec
        dead = self._select_dead(pre)
        del pre
        e_hat = None if dead is None else self._sparse_auxk(x, *dead)
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[pattern.latents[values.detach() > 0]] = True
        return x_hat, e_hat, values, fired

    def _sparse_auxk(self, x: Tensor, values: Tensor, j: Tensor, dead: Tensor) -> Tensor:
        """AuxK's reconstruction e_hat [B, d_in] from the selection of `_select_dead`.

        AuxK picks k_aux (d_in/2 by default) of the n_dead dead latents per token: when that is a
        third of them or more, dense products restricted to the dead block are cheaper than the
        sparse kernels, and they give the same gradients.
        """
        if j.shape[1] * AUXK_DENSE_BLOCK_DENSITY < dead.numel():
            pattern, order = sparse.SparsePattern.from_indices(dead[j], self.d_sae)
            flat = self._attach(values.gather(1, order).flatten(), pattern, x)
            return sparse.decode(flat, pattern, self.W_dec)
        all_dead = dead.numel() == self.d_sae
        W_enc = self.W_enc if all_dead else self.W_enc[:, dead]  # [d_in, n_dead]
        W_dec = self.W_dec if all_dead else self.W_dec[dead]  # [n_dead, d_in]
        pre = (x - self.b_dec) @ W_enc + self.b_enc[dead]  # [B, n_dead]
        z = torch.zeros_like(pre).scatter(1, j, pre.gather(1, j).relu())
        return z @ W_dec

    @torch.no_grad()
    def _pre_acts_no_grad(self, x: Tensor) -> Tensor:
        """`pre_acts(x)`, bit for bit, written into a buffer reused across steps on CPU: a fresh
        [B, d_sae] tensor costs page faults worth ~7% of a sparse step (measured, d_sae=6144)."""
        if x.device.type != "cpu" or sparse.autocast_enabled("cpu"):
            return self.pre_acts(x)
        dtype = torch.result_type(x, self.W_enc)
        pre = self._pre_scratch.get((x.shape[0], self.d_sae), dtype, x.device)
        torch.mm(x - self.b_dec, self.W_enc, out=pre)
        return pre.add_(self.b_enc)

    def _attach(self, values: Tensor, pattern: sparse.SparsePattern, x: Tensor) -> Tensor:
        """ReLU'd selected pre-activations with their (sparse) gradient to the encoder.

        The values are ReLU'd already; ReLU again only to mask their gradient, which is the same
        for pre and ReLU(pre) (zero where pre <= 0).
        """
        return sparse.gather_pre_acts(values, pattern, x, self.W_enc, self.b_enc, self.b_dec).relu()

    def extra_metrics(self, step: int) -> dict[str, float]:
        return {"k": float(self.current_k(step))}
