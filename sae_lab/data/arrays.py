"""In-memory activations (synthetic or a .npy file) as a LightningDataModule of whole batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset


class BatchStream(IterableDataset):
    """Whole batches of rows, reshuffled at every pass; `shuffle=False` keeps the order."""

    def __init__(self, rows: Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = True) -> None:
        self.rows, self.batch_size, self.shuffle = rows, batch_size, shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.rows)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            yield self.rows[order[sl]] if order is not None else self.rows[sl]


class ArrayDataModule(pl.LightningDataModule):
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
        stream = BatchStream(self.train_rows, self.batch_size, shuffle=True, seed=self.seed)
        return DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        stream = BatchStream(self.val_rows, self.batch_size, shuffle=False, drop_last=False)
        return DataLoader(stream, batch_size=None)

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
