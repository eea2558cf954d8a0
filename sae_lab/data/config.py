"""Where training activations come from (the `data:` section of a train config)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field

from sae_lab.config import ConfigError, PathStr, config, require
from sae_lab.data.harvest import SourceConfig
from sae_lab.data.synthetic import SyntheticConfig

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]


@config
class LiveConfig(SourceConfig):
    """A model run inside the data pipeline (no shards on disk): what `sae-lab harvest` would
    run. A training run reads one layer; a pack of SAEs on several layers (a sweep with `layer`
    in its space) reads them all from one forward pass."""

    val_tokens: PosInt = 16_384
    """Rows held out for validation: those of the dataset's first contexts, never trained on."""


@config
class DataConfig:
    """Where activations come from: exactly one of synthetic, npy, shards, live."""

    synthetic: SyntheticConfig | None = None
    """Generate activations from known sparse features."""
    npy: PathStr | None = None
    """Path of a .npy array of shape [N, d_in]."""
    shards: PathStr | None = None
    """Shard directory (or URL) written by `sae-lab harvest`."""
    live: LiveConfig | None = None
    """Run a model over a dataset while training and train on its activations (see LiveConfig)."""
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """synthetic/npy: fraction of rows held out for validation."""
    val_shards: PosInt = 1
    """shards: number of shards held out for validation."""
    shuffle_buffer: NonNegInt = 65_536
    """shards and live: rows (tokens) in the shuffle buffer, which mixes many contexts."""
    num_workers: NonNegInt = 0
    """shards: DataLoader worker processes (live: 0, the model runs in the training process)."""

    def __post_init__(self) -> None:
        chosen = [n for n in SOURCES if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ConfigError(
                f"data: set exactly one of {', '.join(SOURCES)} (got {chosen or 'none'})"
            )
        require(self.live is None or self.num_workers == 0, "num_workers", self.num_workers,
                "0 with data.live (the model runs in the training process)")


SOURCES = ("synthetic", "npy", "shards", "live")

__all__ = ["DataConfig", "LiveConfig", "SyntheticConfig"]


def data_d_in(data: DataConfig) -> int | None:
    """Activation width of the configured data, without loading it (None when not knowable)."""
    if data.synthetic is not None:
        return data.synthetic.d
    if data.npy is not None:
        import numpy as np

        path = Path(data.npy)
        if not path.is_file():
            raise ConfigError(f"base.data.npy: no such file: {path}")
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        return int(shape[1]) if len(shape) == 2 else None
    if data.live is not None:
        return None  # known once the model is loaded, in each trial
    shards = str(data.shards)
    if "://" in shards:
        return None
    manifest = Path(shards) / "manifest.json"
    if not manifest.is_file():
        raise ConfigError(f"base.data.shards: no manifest.json in {shards}")
    info = json.loads(manifest.read_text())
    n_shards = len(info.get("shards", []))
    if n_shards and n_shards <= data.val_shards:  # every trial would fail at its first step
        raise ConfigError(f"base.data.val_shards={data.val_shards} leaves no training shards: "
                          f"{shards} has {n_shards} shard(s)")
    d_in = info.get("d_in")
    return int(d_in) if d_in else None
