"""sae_lab: harvest activations, train sparse autoencoders, sweep, compare and export them."""

__version__ = "0.1.0"

from sae_lab.sae import ARCHITECTURES, SAE, SAEConfig, load  # noqa: E402

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "load", "__version__"]
