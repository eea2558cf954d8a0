"""The SAE's own hyperparameters: one dataclass for every architecture.

Each architecture declares which of the architecture-specific fields it reads (`SAE.uses`), so a
sweep or config that sets a field the chosen architecture ignores is an error naming the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from sae_lab.config import ConfigError  # one error class for every config

ARCHITECTURE_NAMES = ("relu", "topk", "batchtopk", "gated", "jumprelu")

# Fields every architecture uses; all other fields belong to some architectures only.
COMMON_FIELDS = frozenset(
    {"architecture", "d_in", "expansion_factor", "d_sae", "dtype", "dead_tokens"}
)


@dataclass
class SAEConfig:
    """Shape and sparsity mechanism of one sparse autoencoder."""

    architecture: Literal["relu", "topk", "batchtopk", "gated", "jumprelu"] = "topk"
    """Which architecture: relu, topk, batchtopk, gated or jumprelu."""
    d_in: int = 0
    """Width of the activations; 0 takes it from the data."""
    expansion_factor: int = 8
    """d_sae = expansion_factor * d_in, unless d_sae is set."""
    d_sae: int = 0
    """Number of latents; 0 means expansion_factor * d_in."""
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = "float32"
    """Parameter dtype."""
    dead_tokens: int = 1_000_000
    """A latent is dead once it has fired on none of this many consecutive training tokens."""
    k: int = 32
    """topk/batchtopk: active latents per token (batchtopk: on average over the batch)."""
    k_start: int = 0
    """topk/batchtopk: k at step 0, decayed to k over k_schedule_steps; 0 means start at k."""
    k_schedule_steps: int = 0
    """topk/batchtopk: steps over which k goes from k_start to k."""
    k_schedule: Literal["linear", "cosine"] = "linear"
    """topk/batchtopk: shape of the k decay."""
    k_aux: int = 0
    """topk/batchtopk: dead latents used by the AuxK loss; 0 means d_in // 2 (Gao et al.)."""
    aux_coef: float = 1 / 32
    """topk/batchtopk: weight of the AuxK loss (Gao et al. use 1/32)."""
    decoder: Literal["sparse", "dense"] = "sparse"
    """topk/batchtopk: 'sparse' decodes from (indices, values); 'dense' is the reference path."""
    threshold_momentum: float = 0.99
    """batchtopk: EMA momentum of the inference threshold estimated in training."""
    sparsity_coef: float = -1.0
    """relu/gated/jumprelu: sparsity coefficient lambda; negative picks the architecture default."""
    bandwidth: float = 0.1
    """jumprelu: kernel bandwidth epsilon of the straight-through estimators."""
    threshold_init: float = 0.5
    """jumprelu: initial threshold of every latent."""
    threshold_lr_scale: float = 10.0
    """jumprelu: learning rate of log_threshold as a multiple of lr."""

    def __post_init__(self) -> None:
        from sae_lab.sae.registry import ARCHITECTURES

        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"sae.architecture={self.architecture!r}: must be one of {sorted(ARCHITECTURES)}"
            )
        _require(self, "d_in", self.d_in >= 0, ">= 0")
        _require(self, "expansion_factor", self.expansion_factor >= 1, ">= 1")
        _require(self, "d_sae", self.d_sae >= 0, ">= 0")
        _require(self, "dead_tokens", self.dead_tokens >= 1, ">= 1")
        _require(self, "k", self.k >= 1, ">= 1")
        _require(self, "k_start", self.k_start == 0 or self.k_start >= self.k, "0 or >= k")
        _require(self, "k_schedule_steps", self.k_schedule_steps >= 0, ">= 0")
        _require(self, "k_aux", self.k_aux >= 0, ">= 0")
        _require(self, "aux_coef", self.aux_coef >= 0, ">= 0")
        _require(self, "threshold_momentum", 0 <= self.threshold_momentum < 1, "in [0, 1)")
        _require(self, "bandwidth", self.bandwidth > 0, "> 0")
        _require(self, "threshold_init", self.threshold_init > 0, "> 0")
        _require(self, "threshold_lr_scale", self.threshold_lr_scale > 0, "> 0")
        for name in ("k_schedule", "decoder", "dtype"):
            allowed = _literal_choices(name)
            _require(self, name, getattr(self, name) in allowed, f"one of {allowed}")
        if self.d_in and self.latents < self.k_max and self.architecture in ("topk", "batchtopk"):
            raise ConfigError(
                f"sae.k={self.k_max} (k or k_start) is larger than the number of latents "
                f"d_sae={self.latents}"
            )

    @property
    def latents(self) -> int:
        """Resolved number of latents (needs d_in)."""
        return self.d_sae or self.expansion_factor * self.d_in

    @property
    def k_max(self) -> int:
        return max(self.k, self.k_start)

    @property
    def lam(self) -> float:
        """Resolved sparsity coefficient."""
        from sae_lab.sae.registry import ARCHITECTURES

        default = ARCHITECTURES[self.architecture].default_sparsity_coef
        return default if self.sparsity_coef < 0 else self.sparsity_coef

    def with_d_in(self, d_in: int) -> SAEConfig:
        """A copy with d_in filled in (validated again)."""
        if self.d_in and self.d_in != d_in:
            raise ConfigError(f"sae.d_in={self.d_in} does not match the data's d_in={d_in}")
        return SAEConfig(**{**asdict(self), "d_in": d_in})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"sae: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)


def _literal_choices(name: str) -> tuple[str, ...]:
    return {
        "k_schedule": ("linear", "cosine"),
        "decoder": ("sparse", "dense"),
        "dtype": ("float32", "float64", "bfloat16", "float16"),
    }[name]


def _require(cfg: SAEConfig, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"sae.{name}={getattr(cfg, name)!r}: must be {allowed}")
