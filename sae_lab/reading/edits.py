"""Edits of SAE latents inside a model's forward pass, several at once.

With z = encode(h) at each position and z' = z after the edits (applied in the order given):

    scale  "i:xN"   z'_i = N * z_i
    add    "i:+N"   z'_i = z_i + N        h moves by N * W_dec[i]: a multiple of its direction
    clamp  "i:=N"   z'_i = N
    "all:..."       the same edit on every latent ("all:x0.5" halves them all)

    no splice:          h' = h + (z' - z) @ W_dec / s             the SAE's error stays in h
    splice drop-error:  h' = decode(z', h)                        the model runs on the SAE
    splice keep-error:  h' = decode(z', h) + (h - decode(z, h))   = the line above, re-derived

where s = sqrt(d_in) / ||h|| for an SAE with token_norm (its codes are in the units of h scaled to
norm sqrt(d_in), so an added N * W_dec[i] scales with the token's norm), else 1.

so "halve every latent, then add one" is `all:x0.5 123:+4` (Templeton et al. 2024 steer by
clamping features; the splice is the SAE-in-the-loop of downstream-loss evaluations). Edits apply
at every position, or only on the first `prompt_len` positions (the prompt during generation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sae_lab.reading.contexts import check_latent
from sae_lab.sae.base import SAE

Kind = Literal["scale", "add", "clamp"]
Splice = Literal["drop-error", "keep-error"]
_SIGN = {"x": "scale", "+": "add", "=": "clamp"}
_SPEC = re.compile(r"^\s*(all|\d+)\s*:\s*([x+=*-])\s*(.+?)\s*$")


@dataclass(frozen=True)
class LatentEdit:
    """One edit: `latent` None means every latent."""

    latent: int | None
    kind: Kind
    value: float

    def __str__(self) -> str:
        sign = {"scale": "x", "add": "+", "clamp": "="}[self.kind]
        return f"{'all' if self.latent is None else self.latent}:{sign}{self.value:g}"


def parse_edit(spec: str) -> LatentEdit:
    """'123:x30' | '456:+4' | '456:-4' | '789:=0' | 'all:x0.5' -> LatentEdit."""
    m = _SPEC.match(spec)
    value = None
    if m:
        op, number = m.group(2), m.group(3)
        if op == "-":  # "456:-4" adds -4
            op, number = "+", "-" + number
        try:
            value = float(number)
        except ValueError:
            value = None
    if m is None or value is None or not math.isfinite(value):
        raise ValueError(f"cannot read edit {spec!r}: use LATENT:xN (scale), LATENT:+N (add "
                         "N * W_dec), LATENT:=N (clamp); LATENT is an index or 'all'")
    op = "x" if op == "*" else op
    return LatentEdit(None if m.group(1) == "all" else int(m.group(1)), _SIGN[op], value)


def check_edits(edits: list[LatentEdit], d_sae: int) -> None:
    """Unknown latent indices as one-line errors, before any model is loaded."""
    for e in edits:
        if e.latent is not None:
            check_latent(e.latent, d_sae)


def apply_edits(z: Tensor, edits: list[LatentEdit]) -> Tensor:
    """z [N, d_sae] after the edits, in order (a new tensor)."""
    z = z.clone()
    for e in edits:
        cols = slice(None) if e.latent is None else e.latent
        if e.kind == "scale":
            z[:, cols] *= e.value
        elif e.kind == "add":
            z[:, cols] += e.value
        else:
            z[:, cols] = e.value
    return z


class Steering:
    """act [B, T, d] -> edited act, as a callable for `edit_activation`.

    With `prompt_len`, only positions < prompt_len change; positions are counted across calls
    (a generation's first forward holds the prompt, each later one the next token with the KV
    cache), so call `reset()` before each new sequence.
    """

    def __init__(self, sae: SAE, edits: list[LatentEdit], splice: Splice | None = None,
                 prompt_len: int | None = None) -> None:
        check_edits(edits, sae.d_sae)
        if splice not in (None, "drop-error", "keep-error"):
            raise ValueError(f"--splice {splice}: choose drop-error or keep-error")
        self.sae = sae.eval()
        self.edits = list(edits)
        self.splice = splice
        self.prompt_len = prompt_len
        # Pure additions need no codes: z' - z does not depend on z.
        self.needs_codes = splice is not None or any(e.kind != "add" for e in self.edits)
        self.seen = 0

    def reset(self) -> None:
        self.seen = 0

    def __str__(self) -> str:
        parts = [", ".join(map(str, self.edits)) or "no edits"]
        parts.append("every position" if self.prompt_len is None else "prompt only")
        if self.splice:
            parts.append(f"splice {self.splice}")
        return "; ".join(parts)

    @torch.no_grad()
    def __call__(self, act: Tensor) -> Tensor:
        B, T, d = act.shape
        start, self.seen = self.seen, self.seen + T
        sae = self.sae
        h = act.reshape(-1, d).to(sae.W_enc.dtype)  # [B*T, d]
        if self.needs_codes:
            z = sae.encode(h)
        else:
            z = h.new_zeros(h.shape[0], sae.d_sae)
        z_new = apply_edits(z, self.edits)
        if self.splice is None:
            delta = (z_new - z) @ sae.W_dec  # in the SAE's units: token_norm's, if it has it
            s = sae.token_scale(h)
            out = h + (delta if s is None else delta / s)
        else:
            out = sae.decode(z_new, h)
            if self.splice == "keep-error":
                out = out + (h - sae.decode(z, h))
        out = out.view(B, T, d).to(act.dtype)
        if self.prompt_len is None:
            return out
        pos = torch.arange(start, start + T, device=act.device)
        return torch.where((pos < self.prompt_len).view(1, T, 1), out, act)
