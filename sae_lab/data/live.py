"""The live activation source: the model runs inside the data pipeline; nothing goes to disk.

    texts -> windows of ctx_len tokens (text.py, as harvest) -> model forward, stopped at the
      deepest hooked layer (lm/hooks.py) -> rows at kept positions (special and prompt tokens
      excluded, as harvest) -> a row-shuffle pool of data.shuffle_buffer rows mixing many
      contexts (datamodule.shuffle_batches, as for shards) -> float32 batches [batch_size, d_in]

Several layers (a pack whose members read different layers) come from the same forward pass:
rows are [n, n_layers, d_in], one row holding a token's activation at every layer, so the pool
shuffles all layers with one permutation, the one a single-layer run of the same seed draws:
each layer's slice of a batch, [batch_size, d_in], is that run's batch (`LayerView`).

The dataset's first contexts, up to live.val_tokens rows, are held out for validation and never
trained on; training streams the rest, epoch after epoch (each epoch skips the held-out contexts
again). Checkpoints record how many contexts (windows) have gone into the pool, `next_window`; a
resumed run tokenises its way past them without the model and continues with the next, so no
context is used twice. The rows still in the pool when the run stopped are dropped (at most
shuffle_buffer rows plus one forward batch): unlike a shard run, a resumed live run is not
batch-for-batch the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from sae_lab.data.arrays import BatchStream
from sae_lab.data.config import DataConfig, LiveConfig
from sae_lab.data.datamodule import shuffle_batches
from sae_lab.data.harvest import (
    check_ctx_len,
    load_source,
    open_texts,
    probe_width,
    source_header,
)
from sae_lab.data.position import StreamPosition
from sae_lab.data.text import DatasetError, WindowBatch, iter_texts, window_batches
from sae_lab.lm import hooks as L
from sae_lab.lm.load import resolve_device


class LiveSource:
    """A loaded model over the dataset's windows: `batches` tokenises, `rows` runs the model."""

    def __init__(self, cfg: LiveConfig, model: Any = None, tokenizer: Any = None) -> None:
        self.cfg, self.layers, self.layer = cfg, list(cfg.layers), cfg.layers[0]
        device = resolve_device(cfg.device)
        open_texts(cfg)  # a missing dataset fails here, before the model is loaded
        if model is None:
            model, tokenizer = load_source(cfg, device)
        for layer in self.layers:
            L.hook_module(model, layer, cfg.hook)  # an out-of-range layer fails here
        check_ctx_len(model, cfg.ctx_len)
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.d_in = probe_width(model, cfg, self.device)
        self.header = {**source_header(cfg, model, tokenizer), "layer": self.layer,
                       "hook_name": L.hook_name(self.layer, cfg.hook), "d_in": self.d_in,
                       "dtype": cfg.model_dtype, "source": "live"}

    def batches(self, start: int = 0) -> Iterator[tuple[int, int, WindowBatch]]:
        """(global index of the first window, its index within the epoch, batch) for every
        forward batch, epoch after epoch, without end; batches before window `start` are
        tokenised and passed over."""
        c = self.cfg
        g = 0
        for _ in count():
            local = 0
            for batch in window_batches(
                iter_texts(c.dataset, c.split, c.text_column, c.dataset_name, c.prompt_column),
                self.tokenizer, c.ctx_len, c.batch_size, c.keep_special,
            ):
                n = batch.input_ids.shape[0]
                if g + n > start:
                    cut = max(0, start - g)  # only when a run resumes with another batch size
                    yield g + cut, local + cut, _windows(batch, cut)
                g, local = g + n, local + n
            if local == 0:
                raise DatasetError(f"dataset {c.dataset} gave no text")

    @torch.no_grad()  # not inference_mode: the rows become training inputs
    def rows(self, batch: WindowBatch) -> Tensor:
        """Activations at the batch's kept positions on the model's device: [n_rows, d_in] for
        one layer, [n_rows, n_layers, d_in] for several (one forward pass)."""
        with L.capture(self.model, self.layers, self.cfg.hook) as acts:
            L.run_to_hooks(self.model, input_ids=batch.input_ids.to(self.device))
        keep = batch.keep.to(self.device)
        if len(self.layers) == 1:
            return acts[self.layer][keep]
        return torch.stack([acts[layer][keep] for layer in self.layers], dim=1)

    def layer_header(self, layer: int) -> dict[str, Any]:
        """The header of one of the source's layers (what a harvest's manifest says)."""
        return {**self.header, "layer": layer, "hook_name": L.hook_name(layer, self.cfg.hook)}


def _windows(batch: WindowBatch, start: int) -> WindowBatch:
    if not start:
        return batch
    return WindowBatch(batch.input_ids[start:], batch.keep[start:], batch.doc[start:],
                       batch.pos[start:])


class LiveStream(IterableDataset):
    """Training batches from the source's windows at and after `start`, skipping the held-out
    first `val_windows` of every epoch; `next_window` counts the windows that went into the pool."""

    def __init__(self, source: LiveSource, batch_size: int, buffer: int, seed: int,
                 start: int, val_windows: int, node: tuple[int, int] | None = None) -> None:
        self.source, self.batch_size, self.buffer, self.seed = source, batch_size, buffer, seed
        self.start, self.val_windows = start, val_windows
        self.next_window = start
        self.node = node
        """(rank, ranks): run the model on every ranks-th forward batch from the rank-th only
        (data-parallel readers of disjoint contexts); None: on all of them."""

    def __iter__(self) -> Iterator[Tensor]:
        # The start in the seed: a resumed run draws a fresh order for its fresh pool.
        gen = torch.Generator().manual_seed(hash((self.seed, self.start)) % 2**63)
        for batch in shuffle_batches(self._blocks(), self.batch_size, self.buffer, gen,
                                     partial_last=False):
            yield batch.float()

    def _blocks(self) -> Iterator[Tensor]:
        fed = None  # rows fed since the current epoch began (None: not seen from its start)
        rank, ranks = self.node or (0, 1)
        turn = -1  # training forward batches so far: rank r takes those with turn % ranks == r
        for g, local, batch in self.source.batches(self.start):
            n = batch.input_ids.shape[0]
            if local == 0:
                if fed == 0:
                    raise DatasetError(f"dataset {self.source.cfg.dataset}: no tokens left for "
                                       "training after the held-out live.val_tokens")
                fed = 0
            if local + n <= self.val_windows:
                continue  # held out for validation
            turn += 1
            if turn % ranks != rank:  # another data rank's contexts
                if fed is not None:
                    fed += batch.n_rows
                continue
            if local < self.val_windows:
                batch = _windows(batch, self.val_windows - local)
            rows = self.source.rows(batch)
            self.next_window = g + n
            if fed is not None:
                fed += rows.shape[0]
            if rows.shape[0]:
                yield rows


class LiveDataModule(StreamPosition, pl.LightningDataModule):
    """Training and validation batches from a model running over a dataset (`data.live`).

    `model` and `tokenizer` may be passed in already loaded (one model for several runs);
    otherwise they are loaded from data.live.model, on CUDA when present.
    """

    def __init__(self, data: DataConfig, batch_size: int, seed: int = 0, model: Any = None,
                 tokenizer: Any = None) -> None:
        super().__init__()
        if data.live is None:
            raise ValueError("LiveDataModule needs data.live")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.source = LiveSource(data.live, model, tokenizer)
        self.next_window = 0
        """First window of a resumed run (from the checkpoint); 0 for a fresh one."""
        self.node: tuple[int, int] | None = None
        """(rank, ranks) of a data-parallel reader of disjoint contexts (training/launch.py)."""
        self._train: LiveStream | None = None
        self._val: tuple[Tensor, int] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        """What a harvest's manifest would say (model, revision, layer, hook, ...)."""
        return self.source.header

    @property
    def d_in(self) -> int:
        return self.source.d_in

    @property
    def consumed(self) -> int:
        """Windows that have gone into the training pool so far (the resume point)."""
        return self._train.next_window if self._train is not None else self.next_window

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "next_window": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.next_window = int(state.get("next_window", 0))

    def validation_rows(self) -> tuple[Tensor, int]:
        """(the held-out rows [val_tokens, d_in] on CPU, windows they take), computed once."""
        if self._val is None:
            want = self.data.live.val_tokens
            parts, have, windows = [], 0, 0
            for _, local, batch in self.source.batches():
                if have >= want or (local == 0 and windows):
                    break
                rows = self.source.rows(batch)[: want - have]
                parts.append(rows.float().cpu())
                have += rows.shape[0]
                windows = local + batch.input_ids.shape[0]
            if have < want:
                raise DatasetError(f"data.live.val_tokens={want}: dataset "
                                   f"{self.data.live.dataset} has only {have} tokens")
            self._val = (torch.cat(parts), windows)
        return self._val

    def train_dataloader(self) -> DataLoader:
        _, val_windows = self.validation_rows()
        self._train = LiveStream(self.source, self.batch_size, self.data.shuffle_buffer,
                                 self.seed, self.next_window, val_windows, self.node)
        return DataLoader(self._train, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        rows, _ = self.validation_rows()
        return DataLoader(BatchStream(rows, self.batch_size), batch_size=None)

    def held_out(self, rows: int) -> str:
        _, windows = self.validation_rows()
        return (f"all {rows} rows of the first {windows} contexts of {self.data.live.dataset} "
                "(held out of live training)")

    def locate_val_row(self, row: int) -> str:
        return f"held-out live row {row} (of the first contexts of {self.data.live.dataset})"

    def layer_view(self, layer: int) -> LayerView:
        """What a single-layer datamodule of `layer` shows build_module and evaluate_held_out."""
        return LayerView(self, layer)


class LayerView:
    """One layer of a several-layer LiveDataModule: its manifest, width and held-out rows, and
    `pick(batch)`, the layer's [B, d_in] slice of a [B, n_layers, d_in] batch."""

    def __init__(self, dm: LiveDataModule, layer: int) -> None:
        self.dm, self.layer = dm, layer
        self.index = dm.source.layers.index(layer)
        self.manifest = dm.source.layer_header(layer)
        self.d_in = dm.d_in

    def pick(self, batch: Tensor) -> Tensor:
        return batch[:, self.index].contiguous() if batch.dim() == 3 else batch

    def val_dataloader(self) -> list[Tensor]:
        return [self.pick(b) for b in self.dm.val_dataloader()]

    def held_out(self, rows: int) -> str:
        return self.dm.held_out(rows)

    def locate_val_row(self, row: int) -> str:
        return f"layer {self.layer}: {self.dm.locate_val_row(row)}"
