"""Where training activations come from (the `data:` section of a train config)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sae_lab.config import ConfigError, PathStr, config
from sae_lab.synthetic import SyntheticConfig

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]


@config
class DataConfig:
    """Where activations come from: exactly one of synthetic, npy, shards."""

    synthetic: SyntheticConfig | None = None
    """Generate activations from known sparse features."""
    npy: PathStr | None = None
    """Path of a .npy array of shape [N, d_in]."""
    shards: PathStr | None = None
    """Shard directory (or URL) written by `sae-lab harvest`."""
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """synthetic/npy: fraction of rows held out for validation."""
    val_shards: PosInt = 1
    """shards: number of shards held out for validation."""
    shuffle_buffer: NonNegInt = 65_536
    """shards: rows in the shuffle buffer."""
    num_workers: NonNegInt = 0
    """shards: DataLoader worker processes."""

    def __post_init__(self) -> None:
        chosen = [n for n in ("synthetic", "npy", "shards") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ConfigError(
                f"data: set exactly one of synthetic, npy, shards (got {chosen or 'none'})"
            )


__all__ = ["DataConfig", "SyntheticConfig"]
