"""Word tokens with a known answer for explain: latent j fires exactly on token j."""

from __future__ import annotations

import torch

from sae_lab.reading.contexts import TokenText, top_activations
from sae_lab.reading.explain import (
    explain,
    sample_rows,
)
from sae_lab.sae import ARCHITECTURES, sae_config

V = 12  # words w0..w11; latent j fires exactly on token j


class Words:
    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i:02d}" for i in ids)

    def batch_decode(self, seqs: list[list[int]]) -> list[str]:
        return [self.decode(ids) for ids in seqs]


def one_hot_blocks(n: int = 600, seed: int = 0, v: int = V):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, v, (n,), generator=g)
    acts = torch.nn.functional.one_hot(ids, v).float() * (1 + torch.rand(n, 1, generator=g))
    for s in range(0, n, 128):  # doc = row: every context is one token, so answers are exact
        yield {"acts": acts[s:s + 128], "token_ids": ids[s:s + 128].int(),
               "doc": torch.arange(s, min(n, s + 128)), "shard": "fake"}


def token_sae(v: int = V):
    sae = ARCHITECTURES["relu"](sae_config("relu", d_in=v, d_sae=v))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(v))
        sae.W_dec.copy_(torch.eye(v))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae.eval()


def run_explain(chat, out, latents=(0, 1, 3, 5, 7)):
    sae = token_sae()
    top = top_activations(sae, one_hot_blocks(), n=13)
    active, inactive = sample_rows(sae, one_hot_blocks(), list(latents), 30, 10, seed=0)
    return explain(sae, top, active, inactive, list(latents), TokenText(Words()), chat, out,
                   n_top=8, n_sampled=4, n_held_random=5)
