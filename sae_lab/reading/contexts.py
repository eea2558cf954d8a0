"""Top-activating contexts of every latent, from one streaming pass over activation shards.

For each latent we keep the n largest activations seen so far with their global row index
(merging each block's own top n into the running top n), and count how often it fires. Rows are
stored in corpus order, so the context of row r is the rows around r with the same document:
token ids and documents of all rows are kept (12 bytes a row) to cut those windows afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sae_lab.sae.base import SAE


@dataclass
class TopActivations:
    """What one pass over the shards found."""

    values: Tensor
    """[d_sae, n] largest activations of each latent, descending; 0 where it fired fewer times."""
    rows: Tensor
    """[d_sae, n] global row index of each value (-1 where there is none)."""
    fires: Tensor
    """[d_sae] number of rows on which each latent fired."""
    token_ids: np.ndarray
    """[N] token id of every row read."""
    doc: np.ndarray
    """[N] document of every row read."""

    @property
    def n_rows(self) -> int:
        return len(self.token_ids)

    @property
    def density(self) -> Tensor:
        return self.fires.double() / max(self.n_rows, 1)


@torch.no_grad()
def top_activations(sae: SAE, blocks: Iterable[dict[str, Any]], n: int = 10,
                    batch_size: int = 4096, max_tokens: int | None = None,
                    device: str | torch.device = "cpu") -> TopActivations:
    """Stream shard blocks ({"acts", "token_ids", "doc", ...}) through the SAE."""
    sae = sae.to(device).eval()
    d_sae = sae.d_sae
    top_v = torch.zeros(d_sae, n, device=device)
    top_r = torch.full((d_sae, n), -1, dtype=torch.long, device=device)
    fires = torch.zeros(d_sae, dtype=torch.long, device=device)
    ids, docs = [], []
    seen = 0
    for block in blocks:
        acts = block["acts"]
        if acts.shape[1] != sae.d_in:
            raise ValueError(f"shard {block.get('shard')}: rows have width {acts.shape[1]}; "
                             f"the SAE has d_in={sae.d_in}")
        keep = acts.shape[0] if max_tokens is None else min(acts.shape[0], max_tokens - seen)
        ids.append(block["token_ids"][:keep].numpy().astype(np.int64))
        docs.append(block["doc"][:keep].numpy())
        for start in range(0, keep, batch_size):
            x = acts[start : min(keep, start + batch_size)].to(device, sae.W_enc.dtype)
            z = sae.encode(x).float()  # [B, d_sae]
            fires += (z > 0).sum(dim=0)
            v, i = z.T.topk(min(n, z.shape[0]), dim=1)  # [d_sae, <=n]
            cand_v = torch.cat([top_v, v], dim=1)
            cand_r = torch.cat([top_r, i + seen + start], dim=1)
            top_v, pick = cand_v.topk(n, dim=1)
            top_r = cand_r.gather(1, pick)
        seen += keep
        if max_tokens is not None and seen >= max_tokens:
            break
    if seen == 0:
        raise ValueError("no activation rows to inspect (empty shards?)")
    top_r = top_r.masked_fill(top_v <= 0, -1)  # a latent firing on fewer than n rows
    return TopActivations(top_v.cpu(), top_r.cpu(), fires.cpu(), np.concatenate(ids),
                          np.concatenate(docs))


def context_window(top: TopActivations, row: int, left: int, right: int
                   ) -> tuple[list[int], int]:
    """(token ids around `row` within its document, index of `row` in that list)."""
    lo, hi = max(0, row - left), min(top.n_rows, row + right + 1)
    same = top.doc[lo:hi] == top.doc[row]
    # Stop at the first row from another document on either side.
    start = row - lo
    a = start
    while a > 0 and same[a - 1]:
        a -= 1
    b = start
    while b + 1 < len(same) and same[b + 1]:
        b += 1
    return top.token_ids[lo + a : lo + b + 1].tolist(), start - a


class TokenText:
    """Token ids as the text reads, through the tokenizer's own decoder.

    `text(id)` is one token on its own (a promoted token: "##se" stays visibly a word piece);
    `text.pieces(ids)` splits the decoded text of a context into one span per token, so that
    "".join(pieces) == the decoded context. WordPiece then reads "parse" (no "##", spaces between
    words), byte-level BPE and SentencePiece turn "Ġ" and "▁" into spaces, and byte-fallback
    tokens (<0xC3><0xA9>) become the character they spell (on the token that completes it).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        # WordPiece's continuation mark, left on a context that starts inside a word.
        wordpiece = "WordPiece" in str(decoder)
        self.continuation = getattr(decoder, "prefix", None) if wordpiece else None

    def __call__(self, token_id: int) -> str:
        s = self.cache.get(token_id)
        if s is None:
            s = self.tokenizer.decode([token_id])
            self.cache[token_id] = s
        return s

    def pieces(self, ids: list[int]) -> list[str]:
        """One display string per token id; their concatenation is the decoded text."""
        pieces: list[str] = []
        shown = ""  # "".join(pieces)
        mark = ""  # the continuation mark of a first token, left out of every prefix
        prefixes = self.tokenizer.batch_decode([ids[: i + 1] for i in range(len(ids))])
        for i, text in enumerate(prefixes):
            if i == 0 and self.continuation and text.startswith(self.continuation):
                mark = self.continuation
            text = text[len(mark) :] if text.startswith(mark) else text
            if not text.startswith(shown):
                # The decoder rewrote the tail (a byte sequence completing one character, a
                # clean-up of spaces): take back what no longer matches from the last pieces.
                keep = len(os.path.commonprefix([shown, text]))
                cut = len(shown) - keep
                for j in range(len(pieces) - 1, -1, -1):
                    if cut == 0:
                        break
                    n = min(cut, len(pieces[j]))
                    pieces[j] = pieces[j][: len(pieces[j]) - n]
                    cut -= n
                shown = text[:keep]
            pieces.append(text[len(shown) :])
            shown = text
        return pieces


def latent_records(
    top: TopActivations,
    latents: list[int],
    text: TokenText,
    left: int = 12,
    right: int = 4,
    promoted: tuple[Tensor, Tensor] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready record per latent: density, top contexts, promoted tokens."""
    records = []
    density = top.density
    for i in latents:
        contexts = []
        for v, r in zip(top.values[i].tolist(), top.rows[i].tolist(), strict=True):
            if r < 0:
                continue
            ids, at = context_window(top, r, left, right)
            contexts.append({"tokens": text.pieces(ids), "at": at, "value": round(v, 4)})
        rec: dict[str, Any] = {
            "id": i,
            "density": float(density[i]),
            "max": round(float(top.values[i, 0]), 4),
            "contexts": contexts,
        }
        if promoted is not None:
            pv, pi = promoted
            pairs = zip(pi[i].tolist(), pv[i].tolist(), strict=True)
            rec["promoted"] = [[text(t), round(v, 3)] for t, v in pairs]
        records.append(rec)
    return records


def parse_latents(spec: str | None, d_sae: int, default_max: int = 1000) -> list[int]:
    """'0-99,512' -> [0..99, 512]; None -> the first `default_max` latents."""
    if not spec:
        return list(range(min(d_sae, default_max)))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if hi else int(lo)
        except ValueError:
            raise ValueError(f"--latents: cannot read {part!r} (use e.g. 0-99,512)") from None
        for i in (a, b):
            check_latent(i, d_sae)
        out.extend(range(a, b + 1))
    return out


def check_latent(i: int, d_sae: int) -> None:
    if not 0 <= i < d_sae:
        raise ValueError(f"latent {i} does not exist: the SAE has {d_sae} latents (0..{d_sae - 1})")
