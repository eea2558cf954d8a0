"""Sparse autoencoder architectures, one file each, registered by name in ARCHITECTURES."""

from sae_lab.sae.base import SAE, TrainOutput, load
from sae_lab.sae.config import ConfigError, SAEConfig
from sae_lab.sae.registry import ARCHITECTURES

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "ConfigError", "TrainOutput", "load"]

AnySAEConfig = SAEConfig  # replaced by the arch branch
