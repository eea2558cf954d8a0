"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders", arXiv 2404.16014).

    pi_gate = (x - b_dec) @ W_enc + b_gate                       which latents are on
    pi_mag  = (x - b_dec) @ (W_enc * exp(r_mag)) + b_mag         how strongly (weights shared)
    z       = 1[pi_gate > 0] * ReLU(pi_mag)
    L = ||x - x_hat||^2 + lambda * ||ReLU(pi_gate) * ||W_dec rows|| ||_1
        + ||x - x_hat_frozen(ReLU(pi_gate))||^2        (eq. 8: aux through a frozen decoder)

The gate path has no gradient through the Heaviside step; the L1 and aux terms train it.

cfg.decoder picks how a training step is computed (same loss and gradients): "dense", the
reference below; "sparse", only the entries with an open gate (sae_lab.sae.sparse_penalty);
"auto", sparse once the last step's density was low enough.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from sae_lab.sae.base import SAE, TrainOutput, centred_matmul
from sae_lab.sae.config import GatedConfig
from sae_lab.sae.registry import register
from sae_lab.sae.sparse_penalty import SparsePenalty, decode


@register
class GatedSAE(SAE):
    config_cls = GatedConfig
    dead_meaning = ("had an open gate and a positive magnitude on none of the last "
                    "sae.dead_tokens training tokens")
    saelens_architecture = "gated"
    has_b_enc = False
    step_buffers = {"dense": 9.0, "eval": 4.35}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        dtype = self.W_enc.dtype
        self.b_gate = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.r_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self._sparse = SparsePenalty()  # speed path; scratch buffer and last density, not saved

    def gate_and_mag(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # (x - b_dec) @ (W_enc * exp(r_mag)) scales the columns of (x - b_dec) @ W_enc: one
        # encoder product serves both paths
        pre = centred_matmul(x, self.b_dec, self.W_enc)  # [B, d_sae]
        return pre + self.b_gate, pre * self.r_mag.exp() + self.b_mag

    def encoder_bias_grad(self) -> Tensor | None:
        # both paths start from (x - b_dec) @ W_enc: the gate adds b_gate, the magnitude scales
        # by exp(r_mag) and adds b_mag
        if self.b_gate.grad is None or self.b_mag.grad is None:
            return None
        return self.b_gate.grad + self.r_mag.detach().exp() * self.b_mag.grad

    def magnitudes_of(self, x: Tensor, latents: Tensor) -> Tensor:
        """pi_mag of the given latents only, [B, len(latents)]."""
        pre = centred_matmul(x, self.b_dec, self.W_enc[:, latents])
        return pre * self.r_mag[latents].exp() + self.b_mag[latents]

    def codes(self, x: Tensor) -> Tensor:
        pi_gate, pi_mag = self.gate_and_mag(x)
        return torch.where(pi_gate > 0, pi_mag.relu(), 0.0)

    @torch.no_grad()
    def init_near_data(self, x: Tensor) -> None:
        # W_enc scaled by the least-squares factor: the gate's signs are unchanged and, with
        # b_mag = 0, the magnitudes scale by it; decoder rows stay unit (the aux term's frozen
        # decoder reconstructs from ReLU(pi_gate), which scales alike)
        a = self.fit_scale(x)
        if a > 0:
            self.W_enc *= a

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        B = x.shape[0]
        norms = self.W_dec.norm(dim=1)  # [d_sae]
        if self._sparse.use_sparse(self.cfg.decoder):
            # only where the gate is open: z is 0 elsewhere and ReLU(pi_gate) too
            sel = self._sparse.select(x, self.W_enc, self.b_gate, self.b_dec, 0.0)
            gate_acts, lat = sel.values, sel.latents  # [N], pi_gate > 0 there
            pi_mag = (gate_acts - self.b_gate[lat]) * self.r_mag[lat].exp() + self.b_mag[lat]
            z = pi_mag.relu()
            x_part = decode(z, sel, self.W_dec)
            sparsity = (gate_acts * norms[lat]).sum() / B
            gate_part = decode(gate_acts, sel, self.W_dec.detach())
            active = z.detach() > 0
            fired = sel.fired(active)
            dead_pre = functools.partial(self.magnitudes_of, x)
        else:
            pi_gate, pi_mag = self.gate_and_mag(x)
            gate_open = pi_gate > 0
            z = torch.where(gate_open, pi_mag.relu(), 0.0)
            x_part = z @ self.W_dec
            gate_acts = pi_gate.relu()
            sparsity = gate_acts.sum(dim=0) @ norms / B  # column sums: no [B, d_sae] product
            gate_part = gate_acts @ self.W_dec.detach()
            active = z.detach() > 0
            fired = active.any(dim=0)
            self._sparse.record(gate_open.sum(), B, self.d_sae)
            dead_pre = functools.partial(self._dead_block, pi_mag)
        # both paths end with the same sums over latents (latent_sum: across shards)
        x_hat = self.latent_sum(x_part) + self.b_dec
        x_hat_gate = self.latent_sum(gate_part) + self.b_dec.detach()
        sparsity = self.latent_sum(sparsity)
        recon = (x_hat - x).pow(2).sum(dim=-1).mean()
        aux = (x_hat_gate - x).pow(2).sum(dim=-1).mean()
        loss = recon + sparsity_scale * self.cfg.lam * sparsity + aux
        # revival (base.py): a dead latent's gate is shut, so ReLU(pi_gate) has no gradient; its
        # would-be magnitude pi_mag shares W_enc with the gate and has one
        auxk = self.dead_aux_loss(dead_pre, x, x_hat)
        loss = loss + self.cfg.aux_coef * auxk
        parts = {
            "mse": recon.detach() / self.d_in,
            "l1": self.latent_sum(z.detach().sum()) / B,
            "sparsity": sparsity.detach(),
            "aux": aux.detach(),
            "auxk": auxk.detach(),
        }
        l0 = self.latent_sum(active.sum().float()) / B
        return TrainOutput(loss, x_hat, l0, fired, parts)

    @torch.no_grad()
    def saelens_tensors(self) -> dict[str, Tensor]:
        return {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_dec": self.b_dec,
                "b_gate": self.b_gate, "r_mag": self.r_mag, "b_mag": self.b_mag}

    def _fold_extra(self, scale: float) -> None:
        # pi_mag uses W_enc * exp(r_mag), already scaled through W_enc; b_gate, b_mag act on z.
        pass
