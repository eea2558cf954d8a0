"""The SAE's hyperparameters: `SAEConfig` holds what every architecture shares; each architecture
has its own subclass (e.g. `TopKConfig(SAEConfig)`, whose SAE is in topk.py) with an
`architecture: Literal[...]` tag, so a field that does not apply to the chosen architecture is an
error naming it. They are all here, without torch, so that a config is read and checked (and
`sae-lab train --help` printed) before torch is imported.

`sae_lab.sae.AnySAEConfig` (registry.py) is the union of the registered configs, picked by
`architecture`; `sae_config(architecture, **fields)` and `parse_sae_config(mapping)` build one.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from sae_lab.config import ConfigError, config, parse, require, to_dict

__all__ = ["ConfigError", "SAEConfig", "PenaltyConfig", "COMMON_FIELDS", "LEGACY_DEFAULTS",
           "CONFIG_CLASSES", "CONFIGS", "ReLUConfig", "GatedConfig", "JumpReLUConfig", "TopKConfig",
           "BatchTopKConfig", "MatryoshkaConfig", "own_fields", "searchable"]

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
"""Architecture name -> its config class, for SAEConfig.__new__ (filled from CONFIGS below, which
lists the classes defined after it)."""


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


# --- each architecture's own fields (the module of the same name holds the SAE) ------------


@config
class ReLUConfig(PenaltyConfig):
    architecture: Literal["relu"] = "relu"
    """ReLU with a decoder-norm-weighted L1 penalty."""


@config
class GatedConfig(PenaltyConfig):
    architecture: Literal["gated"] = "gated"
    """Gated SAE: a gate path picks latents, a magnitude path sizes them."""
    sparsity_coef: Annotated[float, Field(ge=0)] = 3.0
    """Sparsity coefficient lambda of the gate path's L1 penalty."""
    k_aux: Annotated[int, Field(ge=0)] = 0
    """Dead latents used by the AuxK revival loss; 0 means d_in // 2 (Gao et al.)."""
    aux_coef: Annotated[float, Field(ge=0)] = 1 / 32
    """Weight of the AuxK revival loss on dead latents (0: off; Gao et al. use 1/32)."""


@config
class JumpReLUConfig(PenaltyConfig):
    architecture: Literal["jumprelu"] = "jumprelu"
    """JumpReLU: per-latent learned thresholds, L0 penalty through straight-through estimators."""
    bandwidth: Annotated[float, Field(gt=0)] = 0.1
    """Kernel bandwidth epsilon of the straight-through estimators."""
    threshold_init: Annotated[float, Field(gt=0)] = 0.5
    """Initial threshold of every latent; with init_near_data, the lowest: raised to where d_in
    latents fire per token on the first batch, then scaled with W_enc."""
    threshold_lr_scale: Annotated[float, Field(gt=0)] = 10.0
    """Learning rate of log_threshold as a multiple of lr, at most threshold_lr_max."""
    threshold_lr_max: Annotated[float, Field(gt=0)] = 0.03
    """Upper bound on the learning rate of log_threshold."""
    k_aux: Annotated[int, Field(ge=0)] = 0
    """Dead latents used by the AuxK revival loss; 0 means d_in // 2 (Gao et al.)."""
    aux_coef: Annotated[float, Field(ge=0)] = 1 / 32
    """Weight of the AuxK revival loss on dead latents (0: off; Gao et al. use 1/32)."""
    preact_coef: Annotated[float, Field(ge=0)] = 0.01
    """Weight of the pre-activation loss on dead latents, sum of ReLU(theta - pre) (0: off)."""


@config
class TopKConfig(SAEConfig):
    architecture: Literal["topk"] = "topk"
    """TopK: the k largest pre-activations of each token, AuxK for dead latents."""
    k: Annotated[int, Field(ge=1)] = 32
    """Active latents per token (batchtopk: on average over the batch)."""
    k_start: Annotated[int, Field(ge=0)] = 0
    """k at step 0, decayed to k over k_schedule_steps; 0 means start at k."""
    k_schedule_steps: Annotated[int, Field(ge=0)] = 0
    """Steps over which k goes from k_start to k."""
    k_schedule: Literal["linear", "cosine"] = "linear"
    """Shape of the k decay."""
    k_aux: Annotated[int, Field(ge=0)] = 0
    """Dead latents used by the AuxK loss; 0 means d_in // 2 (Gao et al.)."""
    aux_coef: Annotated[float, Field(ge=0)] = 1 / 32
    """Weight of the AuxK loss (Gao et al. use 1/32)."""
    decoder: Literal["sparse", "dense"] = "sparse"
    """'sparse' decodes from (indices, values); 'dense' is the reference path."""

    def __post_init__(self) -> None:
        require(self.k_start == 0 or self.k_start >= self.k, "sae.k_start", self.k_start,
                "0 or >= k")
        if self.d_in and self.latents < self.k_max:
            raise ConfigError(f"sae.k={self.k_max} (k or k_start) is larger than the number of "
                              f"latents d_sae={self.latents}")

    @property
    def k_max(self) -> int:
        return max(self.k, self.k_start)

    @property
    def settle_steps(self) -> int:
        return self.k_schedule_steps if self.k_start else 0


@config
class BatchTopKConfig(TopKConfig):
    architecture: Literal["batchtopk"] = "batchtopk"  # type: ignore[assignment]
    """BatchTopK: the k * B largest activations of the batch; a global threshold at inference."""
    # On: the batch-wide selection compares activations across tokens, and without it the
    # largest tokens take most of the batch's k * B (known-answer family, heavy+wide recovery
    # 0.42 -> 0.99).
    token_norm: bool = True
    threshold_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """EMA momentum of the inference threshold estimated in training."""
    threshold_start_step: Annotated[int, Field(ge=-1)] = -1
    """First step whose batch updates the threshold; -1 means when the k schedule has ended (an
    estimate taken while k > its target would let too many latents through)."""


@config
class MatryoshkaConfig(BatchTopKConfig):
    architecture: Literal["matryoshka"] = "matryoshka"  # type: ignore[assignment]
    """Matryoshka BatchTopK: nested prefixes of the latents, each reconstructing x alone."""
    group_fractions: tuple[Annotated[float, Field(gt=0)], ...] = (1 / 16, 1 / 16, 1 / 8, 1 / 4,
                                                                  1 / 2)
    """Sizes of the latent groups as fractions of d_sae, summing to 1; prefix i ends after
    group i (default: prefixes of 1/16, 1/8, 1/4, 1/2 and all of d_sae)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isclose(sum(self.group_fractions), 1.0, rel_tol=1e-6),
                "sae.group_fractions", list(self.group_fractions), "fractions summing to 1")
        if self.d_in:
            ends = prefix_ends(self.group_fractions, self.latents)
            if len(set(ends)) < len(ends) or ends[0] == 0:
                raise ConfigError(f"sae.group_fractions={list(self.group_fractions)}: a group "
                                  f"of d_sae={self.latents} latents would be empty")


def prefix_ends(fractions: tuple[float, ...], d_sae: int) -> list[int]:
    """Where each nested prefix ends: cumulative fractions of d_sae, the last one d_sae."""
    ends, total = [], 0.0
    for f in fractions:
        total += f
        ends.append(round(total * d_sae))
    ends[-1] = d_sae
    return ends


CONFIGS: dict[str, type[SAEConfig]] = {
    c.__pydantic_fields__["architecture"].default: c
    for c in (ReLUConfig, TopKConfig, BatchTopKConfig, GatedConfig, JumpReLUConfig,
              MatryoshkaConfig)
}
"""Every architecture's config by name, in the order ARCHITECTURES lists the architectures."""
CONFIG_CLASSES.update(CONFIGS)


def searchable(cls: type[SAEConfig]) -> frozenset[str]:
    """The fields of `cls` a sweep may search: its own and the shape ones every SAE has."""
    return own_fields(cls) | {"expansion_factor", "d_sae", "dead_tokens"}


def own_fields(cls: type[SAEConfig]) -> frozenset[str]:
    """The fields of `cls` that not every architecture has."""
    return frozenset(cls.__pydantic_fields__) - COMMON_FIELDS
