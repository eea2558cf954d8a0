"""Lightning checkpoints written atomically: the whole checkpoint is serialised in memory, then
written beside its name and renamed over it (sae_lab.files.atomic_write_bytes). A run stopped
mid-write, or a disk that fills, leaves the previous checkpoint (or none), never a truncated
`best-step=N.ckpt` or `last.ckpt` that a resume would try to load; a full disk is a one-line
DiskFullError naming the checkpoint and the space it needs."""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from sae_lab.files import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())
