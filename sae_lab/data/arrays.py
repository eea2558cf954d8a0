"""In-memory activations (synthetic or a .npy file) as a LightningDataModule of whole batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from sae_lab.data.position import StreamPosition


class BatchStream(IterableDataset):
    """Batches of rows in order (validation: the last one may be partial), one pass."""

    def __init__(self, rows: Tensor, batch_size: int) -> None:
        self.rows, self.batch_size = rows, batch_size

    def __len__(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(0, len(self.rows), self.batch_size):
            yield self.rows[i : i + self.batch_size]


class ShuffledStream(IterableDataset):
    """Whole batches forever, each pass over the rows in a fresh random order (one generator
    seeded once); the first `skip` batches are dropped (a resumed run's start): the permutations
    of the passes before are drawn and discarded, the rows not touched."""

    def __init__(self, rows: Tensor, batch_size: int, seed: int = 0, skip: int = 0) -> None:
        self.rows, self.batch_size, self.seed, self.skip = rows, batch_size, seed, skip

    def __iter__(self) -> Iterator[Tensor]:
        n = len(self.rows)
        per_pass = n // self.batch_size
        passes, start = divmod(self.skip, per_pass)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(passes):
            torch.randperm(n, generator=gen)
        while True:
            order = torch.randperm(n, generator=gen)
            for i in range(start, per_pass):
                yield self.rows[order[i * self.batch_size : (i + 1) * self.batch_size]]
            start = 0


class ArrayDataModule(StreamPosition, pl.LightningDataModule):
    """Train/validation split of a [N, d_in] array; validation rows are the last val_fraction."""

    def __init__(self, train: Tensor, val: Tensor, batch_size: int, seed: int = 0,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        if len(train) < batch_size:
            raise ValueError(f"only {len(train)} training rows for batch_size={batch_size}")
        self.train_rows, self.val_rows = train.float(), val.float()
        self.batch_size, self.seed = batch_size, seed
        self.metadata = dict(metadata or {})

    @property
    def d_in(self) -> int:
        return self.train_rows.shape[1]

    def train_dataloader(self) -> DataLoader:
        stream = ShuffledStream(self.train_rows, self.batch_size, self.seed, skip=self.position)
        return DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(BatchStream(self.val_rows, self.batch_size), batch_size=None)

    def held_out(self, rows: int) -> str:
        return f"all {rows} held-out rows of {self.metadata.get('source', 'the array')}"

    def locate_val_row(self, row: int) -> str:
        return f"held-out row {row} of {self.metadata.get('source', 'the array')}"

    @classmethod
    def from_npy(cls, path: str | Path, val_fraction: float, batch_size: int,
                 seed: int = 0) -> ArrayDataModule:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"data.npy: no such file: {path}")
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2:
            raise ValueError(f"data.npy: {path} has shape {arr.shape}; expected [N, d_in]")
        rows = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        n_val = max(1, int(len(rows) * val_fraction))
        return cls(rows[:-n_val], rows[-n_val:], batch_size, seed, {"source": str(path)})
