"""Stream harvested shards into training: a LightningDataModule over a shard set.

    shard list --(shuffle per epoch, same seed everywhere)--> split_by_node --> split_by_worker
      --> blocks of rows (shards.read_shard, checked) --> row-shuffle buffer across blocks
      --> whole float32 batches [batch_size, d_in]

Training streams forever by default (epoch after epoch, each a fresh shard order; the trainer
stops at max_tokens); every epoch yields each training row exactly once, and rows left over at
an epoch's end start the next epoch's batches, so every batch is whole. The last `val_shards`
shards of the manifest are held out and read in manifest order, so validation is deterministic.
The number of training batches consumed is saved in checkpoints (`StreamPosition`); a resumed run
replays the stream to that point, so it sees the same batches in the same order as an
uninterrupted one.
"""

from __future__ import annotations

import random
import warnings
from collections import deque
from collections.abc import Iterator
from itertools import count, islice
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from sae_lab.data.config import DataConfig
from sae_lab.data.position import StreamPosition, worker_resume
from sae_lab.data.shards import ShardError, join, read_manifest, read_shard, shard_source


class RowStream(IterableDataset):
    """Batches of rows from a list of shards (see the module docstring)."""

    def __init__(self, urls: list[str], rows: list[int], manifest: dict[str, Any],
                 batch_size: int, shuffle_buffer: int = 0, shuffle_shards: bool = False,
                 seed: int = 0, epochs: int | None = 1, split: bool = True,
                 node: tuple[int, int] | None = None, skip: int = 0) -> None:
        self.urls, self.rows = list(urls), list(rows)
        self.d_in, self.dtype = manifest["d_in"], manifest["dtype"]
        self.batch_size, self.shuffle_buffer = batch_size, shuffle_buffer
        self.shuffle_shards, self.seed, self.epochs, self.split = (
            shuffle_shards, seed, epochs, split)
        self.node = node
        """(rank, world size) when known up front (Lightning's trainer); else webdataset reads
        them from torch.distributed or the RANK/WORLD_SIZE environment variables."""
        self.skip = skip
        """Batches of the whole stream (all workers) already consumed: a resumed run's start."""

    def _ranks(self) -> tuple[int, int, int, int]:
        import webdataset as wds

        rank, world, worker, workers = wds.utils.pytorch_worker_info()
        return (*(self.node or (rank, world)), worker, workers)

    def __iter__(self) -> Iterator[Tensor]:
        rank, world, worker, workers = self._ranks()
        if self.split and len(self.urls) < world * workers:
            raise ShardError(
                f"{len(self.urls)} shard(s) for {world} node(s) x {workers} dataloader "
                "worker(s): each reader needs at least one shard; lower data.num_workers or "
                "harvest smaller shards (--shard-rows)"
            )
        worker, skip = worker_resume(self.skip, worker, workers)
        gen = torch.Generator().manual_seed(hash((self.seed, rank, worker)) % 2**63)
        batches = shuffle_batches(self._blocks(worker, workers), self.batch_size,
                                  self.shuffle_buffer, gen, partial_last=self.epochs is not None)
        for batch in islice(batches, skip, None):
            yield batch.float()

    def _blocks(self, worker: int, workers: int) -> Iterator[Tensor]:
        import webdataset as wds

        epochs = count() if self.epochs is None else range(self.epochs)
        for epoch in epochs:
            order = list(range(len(self.urls)))
            if self.shuffle_shards:
                # One permutation per epoch, identical on every node and worker, then split:
                # the readers get disjoint shard sets that change from epoch to epoch.
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            mine = iter(order)
            if self.split:
                if self.node is None:
                    mine = wds.split_by_node(mine)
                else:
                    rank, world = self.node
                    mine = islice(mine, rank, None, world)
                mine = islice(mine, worker, None, workers)  # as wds.split_by_worker
            for i in mine:
                for block in read_shard(self.urls[i], self.rows[i], self.d_in, self.dtype):
                    yield block["acts"]


def shuffle_batches(blocks: Iterator[Tensor], batch_size: int, buffer: int,
                    gen: torch.Generator, partial_last: bool = True) -> Iterator[Tensor]:
    """Re-batch a stream of row blocks, each row once, drawn at random from a `buffer`-row pool.

    The pool is filled first; then every batch takes `batch_size` rows from random slots and
    puts the next incoming rows in those slots. The slots come from one random permutation of
    the pool per cycle of buffer // batch_size batches, so a row stays in the pool for one to two
    cycles. At the end the pool is emptied in random order; the final partial batch is yielded
    when `partial_last`. buffer=0: no shuffling.
    """
    cap = max(buffer, batch_size) if buffer > 0 else 0
    pool: Tensor | None = None
    filled = 0
    incoming: deque[Tensor] = deque()
    n_in = 0
    slots = torch.empty(0, dtype=torch.long)
    for block in blocks:
        if cap and filled < cap:
            if pool is None:
                pool = block.new_empty(cap, *block.shape[1:])
            k = min(cap - filled, block.shape[0])
            pool[filled : filled + k] = block[:k]
            filled += k
            block = block[k:]
        if block.shape[0]:
            incoming.append(block)
            n_in += block.shape[0]
        while n_in >= batch_size and (not cap or filled == cap):
            new = _take(incoming, batch_size)
            n_in -= batch_size
            if not cap:
                yield new
                continue
            if slots.numel() < batch_size:
                slots = torch.randperm(cap, generator=gen).to(pool.device)
            idx, slots = slots[:batch_size], slots[batch_size:]
            out = pool.index_select(0, idx)  # [batch_size, d_in]; index_select: 15x faster
            pool.index_copy_(0, idx, new)  # than advanced indexing on CPU (measured)
            yield out
    rest = [pool[:filled]] if pool is not None and filled else []
    rest += list(incoming)
    if not rest:
        return
    rest = torch.cat(rest)
    if cap:
        rest = rest.index_select(0, torch.randperm(rest.shape[0], generator=gen).to(rest.device))
    for i in range(0, rest.shape[0], batch_size):
        batch = rest[i : i + batch_size]
        if batch.shape[0] == batch_size or partial_last:
            yield batch


def _take(queue: deque[Tensor], n: int) -> Tensor:
    parts = []
    while n:
        head = queue[0]
        if head.shape[0] <= n:
            parts.append(queue.popleft())
            n -= head.shape[0]
        else:
            parts.append(head[:n])
            queue[0] = head[n:]
            n = 0
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class ShardDataModule(StreamPosition, pl.LightningDataModule):
    """Training and validation batches from a shard set written by `sae-lab harvest`.

    `epochs=None` streams the training shards forever; an integer stops after that many passes
    (the last batch of the last pass may then be partial).
    """

    def __init__(self, data: DataConfig, batch_size: int, seed: int = 0,
                 epochs: int | None = None) -> None:
        super().__init__()
        if data.shards is None:
            raise ValueError("ShardDataModule needs data.shards")
        self.data, self.batch_size, self.seed, self.epochs = data, batch_size, seed, epochs
        self.node: tuple[int, int] | None = None
        """(rank, ranks) reading disjoint training shards, set by a run without a Lightning
        trainer (training/launch.py); None: the trainer's, or one reader."""
        self.source = shard_source(data.shards)
        self._manifest = read_manifest(self.source)
        shards = self._manifest["shards"]
        if not self._manifest.get("complete", False):
            warnings.warn(f"{self.source}: the harvest is not complete; using the "
                          f"{len(shards)} shards written so far", stacklevel=2)
        if len(shards) <= data.val_shards:
            raise ShardError(
                f"data.val_shards={data.val_shards} leaves no training shards: {self.source} has "
                f"{len(shards)} shard(s); harvest more tokens or smaller shards (--shard-rows)"
            )
        self.train_shards = shards[: len(shards) - data.val_shards]
        self.val_shards = shards[len(shards) - data.val_shards :]
        if data.num_workers > len(self.train_shards):
            raise ShardError(
                f"data.num_workers={data.num_workers} but {self.source} has only "
                f"{len(self.train_shards)} training shards; each worker needs at least one"
            )

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    @property
    def d_in(self) -> int:
        return self._manifest["d_in"]

    def _stream(self, shards: list[dict[str, Any]], train: bool) -> RowStream:
        trainer = getattr(self, "trainer", None)
        node = self.node
        if node is None and trainer is not None:
            node = (trainer.global_rank, trainer.world_size)
        return RowStream(
            [join(self.source, s["name"]) for s in shards], [s["rows"] for s in shards],
            self._manifest, self.batch_size,
            shuffle_buffer=self.data.shuffle_buffer if train else 0,
            shuffle_shards=train, seed=self.seed, epochs=self.epochs if train else 1,
            split=train, node=node, skip=self.position if train else 0,
        )

    def train_dataloader(self) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(self._stream(self.train_shards, True), batch_size=None,
                          num_workers=workers, pin_memory=torch.cuda.is_available(),
                          prefetch_factor=4 if workers else None)

    def val_dataloader(self) -> DataLoader:
        # One process, manifest order, no shuffling: the same rows in the same batches every
        # time, so a validation FVU computed later is identical.
        return DataLoader(self._stream(self.val_shards, False), batch_size=None)

    def held_out(self, rows: int) -> str:
        names = [s["name"] for s in self.val_shards]
        return f"all {rows} rows of held-out shard(s) {names}"

    def locate_val_row(self, row: int) -> str:
        """'shard NAME row R' of row `row` of the validation stream (manifest order)."""
        for s in self.val_shards:
            if row < s["rows"]:
                return f"held-out shard {s['name']} row {row}"
            row -= s["rows"]
        return f"held-out row {row} past the last shard"
