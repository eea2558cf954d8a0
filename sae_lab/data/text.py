"""Text in, batches of token windows out: what the model sees and which positions become rows.

Documents are tokenised without special tokens and concatenated, each followed by a separator
(the tokenizer's EOS, else SEP, else nothing). The stream is cut into windows of
`ctx_len - len(prefix) - len(suffix)` tokens, and every window is wrapped in the tokenizer's own
prefix/suffix (BOS for Llama-likes, [CLS] ... [SEP] for BERT, nothing for GPT-2), so the model
sees inputs shaped like its training data. A position becomes a stored row unless it is one of
the added tokens or a BOS/EOS/PAD/CLS/SEP id (both kept with `keep_special`). A document may be a
(prompt, completion) pair: the two are tokenised separately (so the boundary is exact) and joined;
the model reads both, and only the completion's tokens become rows.

The stream depends only on the texts, the tokenizer and ctx_len, which is what lets an
interrupted harvest skip the batches it has already stored without running the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DatasetError(ValueError):
    """A dataset that cannot be read as text; the message names it."""


Document = str | tuple[str, str]
"""A text, or a (prompt, completion) pair of which only the completion becomes rows."""


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(ids int64, doc int64, pos int32, prompt bool) of a run of tokens."""


def iter_texts(dataset: str, split: str = "train", text_column: str = "text",
               name: str | None = None, prompt_column: str | None = None) -> Iterator[Document]:
    """Documents of a local .txt/.jsonl/.parquet file or a Hub dataset, streamed in order.

    A .txt file is split into paragraphs (blank-line separated); other formats give one document
    per record: its text column, or with `prompt_column` the pair (prompt, text).
    """
    import datasets

    path = Path(dataset)
    if not path.exists() and path.suffix.lower() in LOCAL_BUILDERS:
        raise DatasetError(f"dataset {dataset}: no such file")
    if path.exists():
        builder = LOCAL_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetError(f"dataset {dataset}: unsupported file type {path.suffix!r}; "
                               f"use one of {sorted(LOCAL_BUILDERS)} or a Hub dataset id")
        kwargs: dict[str, Any] = {"sample_by": "paragraph"} if builder == "text" else {}
        ds = datasets.load_dataset(builder, data_files=str(path), split="train",
                                   streaming=True, **kwargs)
    else:
        try:
            ds = datasets.load_dataset(dataset, name, split=split, streaming=True)
        except Exception as e:  # datasets raises many types; keep its message, name the input
            raise DatasetError(f"dataset {dataset!r} (split {split!r}): {e}") from e
    first = True
    for record in ds:
        if first:
            for column, flag in ((text_column, "text"), (prompt_column, "prompt")):
                if column is not None and column not in record:
                    raise DatasetError(f"dataset {dataset} has no column {column!r}; its "
                                       f"columns: {sorted(record)} (choose one with "
                                       f"--{flag}-column)")
        first = False
        text = _str(record[text_column])
        yield text if prompt_column is None else (_str(record[prompt_column]), text)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


@dataclass
class WindowBatch:
    """Windows for one forward pass and the rows they yield, in stream order."""

    input_ids: Tensor
    """[B, T] int64."""
    keep: Tensor
    """[B, T] bool: positions stored as rows."""
    doc: Tensor
    """[B, T] int64: index of the document each position comes from."""
    pos: Tensor
    """[B, T] int32: index of the token in its document, -1 for added special tokens."""

    @property
    def n_rows(self) -> int:
        return int(self.keep.sum())

    def rows(self) -> tuple[Tensor, Tensor, Tensor]:
        """(token_ids, doc, pos) of the kept positions, each [n_rows]."""
        k = self.keep
        return self.input_ids[k], self.doc[k], self.pos[k]


def affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer adds before and after a single sequence."""
    probe = "hello world"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare) :])
    return [], []


def special_ids(tokenizer: Any) -> list[int]:
    """BOS/EOS/PAD/CLS/SEP ids of the tokenizer."""
    names = ("bos_token_id", "eos_token_id", "pad_token_id", "cls_token_id", "sep_token_id")
    ids = {getattr(tokenizer, n, None) for n in names}
    return sorted(i for i in ids if isinstance(i, int))


def window_batches(
    texts: Iterable[Document],
    tokenizer: Any,
    ctx_len: int,
    batch_size: int,
    keep_special: bool = False,
    docs_per_call: int = 256,
) -> Iterator[WindowBatch]:
    """Batches of `batch_size` windows of ctx_len tokens; the last window may be shorter and
    then comes alone in its batch."""
    prefix, suffix = affixes(tokenizer)
    body = ctx_len - len(prefix) - len(suffix)
    if body < 1:
        raise ValueError(f"ctx_len={ctx_len} leaves no room next to the tokenizer's special "
                         f"tokens {prefix + suffix}")
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    drop = np.array(special_ids(tokenizer), dtype=np.int64)
    windows: list[Arrays] = []
    for ids, doc, pos, prompt in _cut(_token_stream(texts, tokenizer, sep, docs_per_call), body):
        windows.append(_wrap(ids, doc, pos, prompt, prefix, suffix))
        if len(windows) == batch_size:
            yield _batch(windows, drop, keep_special)
            windows = []
    full = [w for w in windows if len(w[0]) == ctx_len]
    short = [w for w in windows if len(w[0]) != ctx_len]
    for group in (full, short):
        if group:
            yield _batch(group, drop, keep_special)


def _token_stream(texts: Iterable[Document], tokenizer: Any, sep: int | None,
                  docs_per_call: int) -> Iterator[Arrays]:
    """Arrays a chunk of documents at a time; separators have pos -1."""
    chunk: list[Document] = []
    first_doc = 0
    for text in texts:
        chunk.append(text)
        if len(chunk) == docs_per_call:
            yield _tokenize(chunk, first_doc, tokenizer, sep)
            first_doc += len(chunk)
            chunk = []
    if chunk:
        yield _tokenize(chunk, first_doc, tokenizer, sep)


def _tokenize(chunk: list[Document], first_doc: int, tokenizer: Any, sep: int | None) -> Arrays:
    def encode(texts: list[str]) -> list[list[int]]:
        # verbose=False: long documents are cut into windows later; the length warning is noise.
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    prompts = [d[0] if isinstance(d, tuple) else "" for d in chunk]
    encoded = encode([d[1] if isinstance(d, tuple) else d for d in chunk])
    prompted = encode(prompts) if any(prompts) else [[] for _ in chunk]
    ids, doc, pos, prompt = [], [], [], []
    for j, (head, tokens) in enumerate(zip(prompted, encoded, strict=True)):
        if not tokens:
            continue  # nothing to keep (a prompt without completion too)
        n = len(head) + len(tokens) + (sep is not None)
        ids.append(np.asarray(head + tokens + ([sep] if sep is not None else []),
                              dtype=np.int64))
        doc.append(np.full(n, first_doc + j, dtype=np.int64))
        p = np.arange(n, dtype=np.int32)
        if sep is not None:
            p[-1] = -1
        pos.append(p)
        prompt.append(np.arange(n) < len(head))
    if not ids:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.astype(np.int32), empty.astype(bool)
    return np.concatenate(ids), np.concatenate(doc), np.concatenate(pos), np.concatenate(prompt)


def _cut(stream: Iterator[Arrays], body: int) -> Iterator[Arrays]:
    """Consecutive windows of `body` tokens; the remainder at the end as a last, short window."""
    buf = [np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32),
           np.zeros(0, dtype=bool)]
    for arrays in stream:
        buf = [np.concatenate([b, a]) for b, a in zip(buf, arrays, strict=True)]
        n_full = len(buf[0]) // body
        for w in range(n_full):
            yield tuple(b[w * body : (w + 1) * body] for b in buf)
        buf = [b[n_full * body :] for b in buf]
    if len(buf[0]):
        yield tuple(buf)


def _wrap(ids: np.ndarray, doc: np.ndarray, pos: np.ndarray, prompt: np.ndarray,
          prefix: list[int], suffix: list[int]) -> Arrays:
    """Add the tokenizer's prefix and suffix; they belong to the window's first/last document."""
    ids = np.concatenate([np.asarray(prefix, dtype=np.int64), ids,
                          np.asarray(suffix, dtype=np.int64)])
    doc = np.concatenate([np.full(len(prefix), doc[0]), doc, np.full(len(suffix), doc[-1])])
    pos = np.concatenate([np.full(len(prefix), -1, dtype=np.int32), pos,
                          np.full(len(suffix), -1, dtype=np.int32)])
    prompt = np.concatenate([np.zeros(len(prefix), dtype=bool), prompt,
                             np.zeros(len(suffix), dtype=bool)])
    return ids, doc, pos, prompt


def _batch(windows: list[Arrays], drop: np.ndarray, keep_special: bool) -> WindowBatch:
    ids, doc, pos, prompt = (torch.from_numpy(np.stack(a)) for a in zip(*windows, strict=True))
    if keep_special:
        keep = torch.ones_like(ids, dtype=torch.bool)
    else:
        keep = (pos >= 0) & ~torch.isin(ids, torch.from_numpy(drop))
    return WindowBatch(ids, keep & ~prompt, doc, pos)
