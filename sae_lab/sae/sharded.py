"""One SAE over several processes: its latents split across ranks (tensor parallel over d_sae),
its batch split across ranks (data parallel), or both on a 2-D mesh, with plain torch.distributed
(gloo on CPU, NCCL on GPU).

Layout. World rank = data_rank * latents + latent_rank. Latent rank r of N holds the n = d_sae / N
latents [r n, (r + 1) n): W_enc[:, r n:(r + 1) n], W_dec[r n:(r + 1) n], b_enc and every other
per-latent tensor (gates, thresholds, dead counters) at those latents. b_dec and BatchTopK's
threshold are replicated. Data rank d reads its own part of the stream.

A rank computes its own latents' pre-activations and codes; what crosses ranks is:
    latent_sum   every sum over latents (decode, L1/L0 terms): all-reduce over the latent group;
                 backward passes the gradient through unchanged, since everything after the
                 reduction (the loss) is the same on every latent rank
    keep_top     TopK (per token) and AuxK: each rank's own k best candidates are all-gathered
                 over the latent group and the k best of those kept; BatchTopK the same per batch
                 over every rank (its k * B are of the whole batch)
    grads        b_dec's encoder gradient summed over the latent group (`reduce_grads`), every
                 gradient averaged over the data group; fired latents OR-ed over the data group
so that losses, gradients, dead counters and metrics come out as one process on the whole batch
gives them (tests/sae/test_sharded.py). Saving gathers one ordinary SAE (`gather_sae`); a run
resumes by sharding a whole SAE again (`shard_sae`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from sae_lab.sae.base import SAE
from sae_lab.sae.config import ConfigError

REPLICATED = frozenset({"b_dec"})
"""Tensors every latent rank holds whole (besides 0-dim ones such as BatchTopK's threshold)."""


def latent_dim(name: str, t: Tensor) -> int | None:
    """The dimension along which a state tensor is split over latent ranks; None: replicated."""
    if name in REPLICATED or t.dim() == 0:
        return None
    return 1 if name == "W_enc" else 0


class Mesh:
    """This process's place on the (data x latents) mesh and its two process groups."""

    def __init__(self, latents: int = 1, data: int = 1) -> None:
        world, rank = dist.get_world_size(), dist.get_rank()
        if latents * data != world:
            raise ConfigError(f"parallel: latents={latents} x data={data} needs {latents * data} "
                              f"processes, got {world}")
        self.latents, self.data = latents, data
        self.latent_rank, self.data_rank = rank % latents, rank // latents
        self.latent_group = _my_group([[d * latents + r for r in range(latents)]
                                       for d in range(data)])
        self.data_group = _my_group([[d * latents + r for d in range(data)]
                                     for r in range(latents)])


def _my_group(groups: list[list[int]]) -> dist.ProcessGroup:
    """Create every group (all ranks must, in the same order) and return the one holding this
    rank."""
    world, rank = dist.get_world_size(), dist.get_rank()
    mine = None
    for ranks in groups:
        group = dist.group.WORLD if len(ranks) == world else dist.new_group(ranks)
        if rank in ranks:
            mine = group
    return mine


class _AllReduceSum(torch.autograd.Function):
    """Sum over a group; the gradient passes through (the loss after it is the same on every
    rank of the group, so is its gradient)."""

    @staticmethod
    def forward(ctx, t: Tensor, group: dist.ProcessGroup) -> Tensor:
        t = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class LatentShard:
    """What an SAE holding one latent shard asks of the others (`SAE.shard`)."""

    def __init__(self, mesh: Mesh, total: int, device: torch.device) -> None:
        if total % mesh.latents:
            raise ConfigError(f"parallel.latents={mesh.latents} must divide the SAE's {total} "
                              "latents")
        self.mesh = mesh
        self.total = total
        self.n_local = total // mesh.latents
        self.offset = mesh.latent_rank * self.n_local
        self.device = device
        """Where this shard's collectives of counts run (NCCL reduces CUDA tensors only)."""

    @property
    def data_size(self) -> int:
        return self.mesh.data

    def latent_sum(self, t: Tensor) -> Tensor:
        if self.mesh.latents == 1:
            return t
        return _AllReduceSum.apply(t, self.mesh.latent_group)

    def count(self, n: int) -> int:
        """n summed over the latent group."""
        if self.mesh.latents == 1:
            return n
        t = torch.tensor([n], dtype=torch.long, device=self.device)
        dist.all_reduce(t, group=self.mesh.latent_group)
        return int(t)

    def latent_mean(self, t: Tensor) -> Tensor:
        """The mean over latent ranks of a per-shard mean (shards are equal): the global mean."""
        if self.mesh.latents == 1:
            return t
        t = t.detach().reshape(1).clone()
        dist.all_reduce(t, group=self.mesh.latent_group)
        return t[0] / self.mesh.latents

    def keep_top(self, values: Tensor, k: int, whole_batch: bool) -> Tensor | None:
        """See `SAE.keep_top`: each rank's candidates [B, m <= k], padded to k with -inf,
        all-gathered; a bool mask of this rank's that are among each row's k largest."""
        group = dist.group.WORLD if whole_batch else self.mesh.latent_group
        size = dist.get_world_size(group)
        if size == 1:
            return None
        B, m = values.shape
        padded = values.new_full((B, k), float("-inf"))
        padded[:, :m] = values.detach()
        parts = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(parts, padded, group=group)
        won = torch.cat(parts, dim=1).topk(k, dim=1, sorted=False).indices  # [B, k]
        mask = torch.zeros(B, size * k, dtype=torch.bool, device=values.device)
        mask.scatter_(1, won, True)
        start = dist.get_rank(group) * k
        return mask[:, start:start + m]

    def smallest(self, t: Tensor) -> Tensor:
        """The minimum of a scalar over every rank (BatchTopK's smallest kept value)."""
        if dist.get_world_size() == 1:
            return t
        t = t.detach().reshape(1).clone()
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t[0]

    def fired_anywhere(self, fired: Tensor, n_tokens: int) -> tuple[Tensor, int]:
        """(latents that fired on some data rank's tokens, tokens of all data ranks)."""
        if self.mesh.data == 1:
            return fired, n_tokens
        t = fired.to(torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.mesh.data_group)
        return t.bool(), n_tokens * self.mesh.data

    def data_mean(self, t: Tensor) -> Tensor:
        """The mean over data ranks (of a loss or metric each computed on its own batch)."""
        if self.mesh.data == 1:
            return t
        t = t.detach().reshape(1).clone()
        dist.all_reduce(t, group=self.mesh.data_group)
        return t[0] / self.mesh.data


@torch.no_grad()
def shard_sae(sae: SAE, mesh: Mesh) -> SAE:
    """Keep only this rank's latents of a whole SAE (in place; every rank passes the same SAE)."""
    shard = LatentShard(mesh, sae.d_sae, sae.b_dec.device)
    for name, t in list(sae.state_dict(keep_vars=True).items()):
        dim = latent_dim(name, t)
        if dim is not None:
            part = t.detach().narrow(dim, shard.offset, shard.n_local).clone()
            if isinstance(t, torch.nn.Parameter):
                t.data = part
            else:
                setattr(sae, name, part)
    sae.shard = shard
    return sae


@torch.no_grad()
def gather_sae(sae: SAE) -> SAE:
    """One ordinary SAE, on every rank, from the shards of a sharded one (saved, exported and
    loaded as any other); `sae` itself is left sharded."""
    shard: LatentShard = sae.shard
    whole = type(sae)(sae.cfg, metadata=sae.metadata).to(sae.b_dec.device)
    state = {}
    for name, t in sae.state_dict().items():
        dim = latent_dim(name, t)
        if dim is None or shard.mesh.latents == 1:
            state[name] = t
            continue
        parts = [torch.empty_like(t) for _ in range(shard.mesh.latents)]
        dist.all_gather(parts, t.contiguous(), group=shard.mesh.latent_group)
        state[name] = torch.cat(parts, dim=dim)
    whole.load_state_dict(state)
    return whole


def reduce_grads(sae: SAE) -> None:
    """After backward: complete b_dec's gradient over the latent group and average every
    gradient over the data group.

    b_dec enters the decoder (whole on every rank) and each rank's encoder, (x - b_dec) @ W_enc,
    whose gradient there is -W_enc @ c with c the column sums of that product's gradient: the
    encoder biases' gradient (`SAE.encoder_bias_grad`). Each rank adds the other ranks' parts."""
    shard: LatentShard = sae.shard
    mesh = shard.mesh
    if mesh.latents > 1 and sae.b_dec.grad is not None:
        c = sae.encoder_bias_grad()
        own = -(sae.W_enc.detach() @ c) if c is not None else torch.zeros_like(sae.b_dec)
        total = own.clone()
        dist.all_reduce(total, group=mesh.latent_group)
        sae.b_dec.grad += total - own
    if mesh.data > 1:
        for p in sae.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=mesh.data_group)
                p.grad /= mesh.data


def grad_norm(sae: SAE) -> Tensor:
    """The 2-norm of all gradients of the whole SAE (sharded ones summed over the latent
    group), as `torch.nn.utils.clip_grad_norm_` computes it in one process."""
    grads = {n: p.grad for n, p in sae.named_parameters() if p.grad is not None}
    sq = torch.zeros((), dtype=torch.float64, device=sae.b_dec.device)
    split = torch.zeros_like(sq)
    for name, g in grads.items():
        if latent_dim(name, g) is None:
            sq += g.double().pow(2).sum()
        else:
            split += g.double().pow(2).sum()
    shard = sae.shard
    if shard is not None and shard.mesh.latents > 1:
        dist.all_reduce(split, group=shard.mesh.latent_group)
    return (sq + split).sqrt()
