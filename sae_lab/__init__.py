"""sae_lab: harvest activations, train sparse autoencoders, sweep, compare and export them.

    import sae_lab
    result = sae_lab.train(sae_lab.TrainConfig(...))   # -> TrainResult(sae, metrics, out_dir)
    sae = sae_lab.load("runs/sae/final")

`sae_lab.train` is a function; the training code lives in the subpackage `sae_lab.training`.
Lightning is imported only when training starts, so `import sae_lab` and `sae-lab --help` stay
quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sae_lab.version import __version__

# Imported on first use (PEP 562), so `import sae_lab` and `sae-lab --help` load no torch.
_SAE_NAMES = ("ARCHITECTURES", "SAE", "SAEConfig", "AnySAEConfig", "sae_config",
              "parse_sae_config", "load", "TopKConfig", "BatchTopKConfig", "ReLUConfig",
              "GatedConfig", "JumpReLUConfig", "MatryoshkaConfig")
_LAZY = {
    **dict.fromkeys(_SAE_NAMES, "sae_lab.sae"),
    **dict.fromkeys(("DataConfig", "SyntheticConfig", "TrainConfig"), "sae_lab.training.config"),
}

if TYPE_CHECKING:
    from sae_lab.sae import ARCHITECTURES, SAE, SAEConfig, load  # noqa: F401
    from sae_lab.training.config import DataConfig, SyntheticConfig, TrainConfig  # noqa: F401
    from sae_lab.training.run import TrainResult


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sae_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def train(cfg: TrainConfig, callbacks=(), ckpt_path=None, logger: bool = True) -> TrainResult:
    """Train one SAE; see `sae_lab.training.run.train`."""
    from sae_lab.training.run import train as _train

    return _train(cfg, callbacks=callbacks, ckpt_path=ckpt_path, logger=logger)


__all__ = [*_LAZY, "train", "__version__"]
