"""Sparse autoencoder architectures, one file each, registered by name in ARCHITECTURES.

The configs (sae/config.py) and their parsing need no torch; `SAE`, `load`, `TrainOutput` and
ARCHITECTURES (the nn.Module classes) import torch and every architecture on first use (PEP 562),
so that a config is read and checked before torch loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sae_lab.sae.config import (
    CONFIGS,
    BatchTopKConfig,
    ConfigError,
    GatedConfig,
    JumpReLUConfig,
    MatryoshkaConfig,
    ReLUConfig,
    SAEConfig,
    TopKConfig,
)
from sae_lab.sae.registry import (
    any_sae_config,
    architectures,
    parse_sae_config,
    register,
    sae_config,
)

if TYPE_CHECKING:
    from sae_lab.sae.base import SAE, TrainOutput, load
    from sae_lab.sae.registry import ARCHITECTURES

AnySAEConfig = any_sae_config()
"""Any registered architecture's config, picked by its `architecture` field (default topk)."""

_FROM_BASE = ("SAE", "TrainOutput", "load")


def __getattr__(name: str) -> Any:
    if name == "ARCHITECTURES":
        value: Any = architectures()
    elif name in _FROM_BASE:
        architectures()
        value = getattr(importlib.import_module("sae_lab.sae.base"), name)
    else:
        raise AttributeError(f"module 'sae_lab.sae' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "AnySAEConfig", "ConfigError", "TrainOutput", "load",
    "register", "sae_config", "parse_sae_config", "TopKConfig", "BatchTopKConfig", "ReLUConfig",
    "GatedConfig", "JumpReLUConfig", "MatryoshkaConfig", "CONFIGS",
]
