"""sae_lab: harvest activations, train sparse autoencoders, sweep, compare and export them.

    import sae_lab
    result = sae_lab.train(sae_lab.TrainConfig(...))   # -> TrainResult(sae, metrics, out_dir)
    sae = sae_lab.load("runs/sae/final")

`sae_lab.train` is a function; the training code lives in the subpackage `sae_lab/train/`
(imported as `from sae_lab.train.run import ...`). Lightning is imported only when training
starts, so `import sae_lab` and `sae-lab --help` stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Import the subpackage before defining the function of the same name: a first import of
# sae_lab.train later on would otherwise rebind `sae_lab.train` to the module.
import sae_lab.train.config  # noqa: E402, F401
from sae_lab.sae import (  # noqa: E402
    ARCHITECTURES,
    SAE,
    AnySAEConfig,
    BatchTopKConfig,
    GatedConfig,
    JumpReLUConfig,
    ReLUConfig,
    SAEConfig,
    TopKConfig,
    load,
    parse_sae_config,
    sae_config,
)
from sae_lab.train.config import DataConfig, SyntheticConfig, TrainConfig  # noqa: E402

if TYPE_CHECKING:
    from sae_lab.train.run import TrainResult


def train(cfg: TrainConfig, callbacks=(), ckpt_path=None, logger: bool = True) -> TrainResult:
    """Train one SAE; see `sae_lab.train.run.train`."""
    from sae_lab.train.run import train as _train

    return _train(cfg, callbacks=callbacks, ckpt_path=ckpt_path, logger=logger)


__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "AnySAEConfig", "sae_config", "parse_sae_config",
    "TopKConfig", "BatchTopKConfig", "ReLUConfig", "GatedConfig", "JumpReLUConfig",
    "DataConfig", "SyntheticConfig", "TrainConfig", "load", "train", "__version__",
]
