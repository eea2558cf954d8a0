"""The SAE's hyperparameters: `SAEConfig` holds what every architecture shares; each architecture
declares its own subclass in its own file (e.g. `TopKConfig(SAEConfig)` in topk.py) with an
`architecture: Literal[...]` tag, so a field that does not apply to the chosen architecture is an
error naming it.

`sae_lab.sae.AnySAEConfig` (registry.py) is the union of the registered configs, picked by
`architecture`; `sae_config(architecture, **fields)` and `parse_sae_config(mapping)` build one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from sae_lab.config import ConfigError, config, parse, to_dict

__all__ = ["ConfigError", "SAEConfig", "PenaltyConfig", "COMMON_FIELDS", "LEGACY_DEFAULTS",
           "CONFIG_CLASSES"]

COMMON_FIELDS = frozenset(
    {"architecture", "d_in", "expansion_factor", "d_sae", "dtype", "dead_tokens", "token_norm"}
)
"""Fields every architecture has."""

# The flat config that every SAE saved before per-architecture configs carried, with its defaults:
# a saved field the architecture does not have is dropped when it still holds this value.
LEGACY_DEFAULTS: dict[str, Any] = {
    "k": 32, "k_start": 0, "k_schedule_steps": 0, "k_schedule": "linear", "k_aux": 0,
    "aux_coef": 1 / 32, "decoder": "sparse", "threshold_momentum": 0.99, "sparsity_coef": -1.0,
    "bandwidth": 0.1, "threshold_init": 0.5, "threshold_lr_scale": 10.0,
}


@config
class SAEConfig:
    """Shape of one sparse autoencoder; each architecture's subclass adds its sparsity mechanism.

    `SAEConfig(architecture="relu", sparsity_coef=2)` builds that architecture's own config
    (here a ReLUConfig, still an SAEConfig), as `sae_config("relu", ...)` does."""

    architecture: str = ""
    """Which architecture (relu, topk, batchtopk, gated, jumprelu, ...): picks the subclass."""
    d_in: Annotated[int, Field(ge=0)] = 0
    """Width of the activations; 0 takes it from the data."""
    expansion_factor: Annotated[int, Field(ge=1)] = 8
    """d_sae = expansion_factor * d_in, unless d_sae is set."""
    d_sae: Annotated[int, Field(ge=0)] = 0
    """Number of latents; 0 means expansion_factor * d_in."""
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = "float32"
    """Parameter dtype."""
    dead_tokens: Annotated[int, Field(ge=1)] = 1_000_000
    """A latent is dead once it has fired on none of this many consecutive training tokens."""
    token_norm: bool = False
    """Scale each token to norm sqrt(d_in) before encoding, and its reconstruction back (SAELens's
    constant_norm_rescale): every token then weighs alike in the loss and in a batch-wide
    selection, whatever its norm. On where measured to help (the known-answer recovery family):
    every architecture but TopK, whose selection is per token already."""

    def __new__(cls, *args: Any, **kwargs: Any) -> SAEConfig:
        if cls is SAEConfig:
            cls = _config_class(args[0] if args else kwargs.get("architecture"), kwargs)
        return super().__new__(cls)

    @property
    def latents(self) -> int:
        """Resolved number of latents (needs d_in)."""
        return self.d_sae or self.expansion_factor * self.d_in

    @property
    def settle_steps(self) -> int:
        """Steps before the architecture's sparsity reaches its target (a k schedule, ...)."""
        return 0

    def with_d_in(self, d_in: int) -> SAEConfig:
        """A copy with d_in filled in (validated again)."""
        if self.d_in and self.d_in != d_in:
            raise ConfigError(f"sae.d_in={self.d_in} does not match the data's d_in={d_in}")
        return parse(type(self), {**self.to_dict(), "d_in": d_in}, "sae")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


CONFIG_CLASSES: dict[str, type[SAEConfig]] = {}
"""Architecture name -> its config class; `registry.register` fills it (this module sits below
the registry, so the registry tells it)."""


def _config_class(architecture: Any, fields: dict[str, Any]) -> type[SAEConfig]:
    """The config class `SAEConfig(architecture=..., **fields)` stands for: the architecture's
    own; SAEConfig itself without one, unless a field needs an architecture (one line saying
    which)."""
    if architecture:
        if architecture not in CONFIG_CLASSES:
            raise ConfigError(f"sae.architecture={architecture!r}: must be one of "
                              f"{sorted(CONFIG_CLASSES)}")
        return CONFIG_CLASSES[architecture]
    for name in fields:
        owners = [a for a, c in CONFIG_CLASSES.items() if name in c.__pydantic_fields__]
        if name not in COMMON_FIELDS and owners:
            raise ConfigError(f"{name!r} is a field of {', '.join(owners)}: pass the "
                              f"architecture, e.g. SAEConfig(architecture={owners[0]!r}, "
                              f"{name}=...)")
    return SAEConfig


@config
class PenaltyConfig(SAEConfig):
    """Sparsity from a penalty weighted by lambda (relu, gated, jumprelu)."""

    sparsity_coef: Annotated[float, Field(ge=0)] = 1.0
    """Sparsity coefficient lambda."""
    # On: trained on heavy-tailed token norms, a penalty SAE fits the largest tokens first
    # (known-answer family, heavy+wide recovery: JumpReLU 0.80 -> 0.99, Gated 0.91 -> 0.98).
    token_norm: bool = True
    decoder: Literal["auto", "sparse", "dense"] = "auto"
    """'sparse' computes a step from the active latents only; 'dense' is the reference path;
    'auto' takes 'sparse' once the last step had under 10% of its entries active."""

    @property
    def lam(self) -> float:
        return self.sparsity_coef
