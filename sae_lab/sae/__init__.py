"""Sparse autoencoder architectures, one file each, registered by name in ARCHITECTURES."""

from sae_lab.sae.base import SAE, TrainOutput, load
from sae_lab.sae.config import ConfigError, SAEConfig
from sae_lab.sae.registry import (
    ARCHITECTURES,
    any_sae_config,
    parse_sae_config,
    register,
    sae_config,
)

# The architectures, in the order ARCHITECTURES lists them: importing a module registers it.
# A new architecture is one line here.
# isort: off
from sae_lab.sae.relu import ReLUConfig
from sae_lab.sae.topk import TopKConfig
from sae_lab.sae.batchtopk import BatchTopKConfig
from sae_lab.sae.gated import GatedConfig
from sae_lab.sae.jumprelu import JumpReLUConfig
from sae_lab.sae.matryoshka import MatryoshkaConfig
# isort: on

AnySAEConfig = any_sae_config()
"""Any registered architecture's config, picked by its `architecture` field (default topk)."""

__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "AnySAEConfig", "ConfigError", "TrainOutput", "load",
    "register", "sae_config", "parse_sae_config", "TopKConfig", "BatchTopKConfig", "ReLUConfig",
    "GatedConfig", "JumpReLUConfig", "MatryoshkaConfig",
]
