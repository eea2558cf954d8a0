"""The package version, in a module of its own so that nothing needs to import `sae_lab` itself
(whose `__init__` reaches up into train/ for its lazy names)."""

__version__ = "0.1.0"
