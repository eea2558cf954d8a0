"""Activations with a known answer: sparse non-negative combinations of known unit directions.

    x = sum_i a_i f_i + noise,   a_i = m_i * 1[feature i active],   ||f_i|| = 1

Feature i is active with probability p_i proportional to rank^-freq_exponent, scaled so that
`active` features fire per token on average; magnitudes m_i ~ N(magnitude_mean, magnitude_std)
clipped at 0, or log-normal with that mean and standard deviation (a heavy right tail).
`recovery` scores how well a trained decoder found the true directions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import Field

from sae_lab.config import config, require

if TYPE_CHECKING:  # torch is imported where data is made: reading a config needs none
    from torch import Tensor

PosInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0)]


@config
class SyntheticConfig:
    """Activations built from known sparse features (see sae_lab.data.synthetic)."""

    d: PosInt = 64
    """Activation width."""
    n_features: PosInt = 512
    """Number of true unit-norm feature directions."""
    active: Annotated[float, Field(gt=0)] = 5.0
    """Mean number of features active per token."""
    freq_exponent: float = 0.0
    """Feature frequencies follow rank^-freq_exponent (0: all equally frequent)."""
    magnitude_mean: float = 1.0
    """Mean magnitude of an active feature."""
    magnitude_std: NonNegFloat = 0.25
    """Standard deviation of an active feature's magnitude."""
    magnitude_dist: Literal["normal", "lognormal"] = "normal"
    """Distribution of magnitudes: normal clipped at 0, or log-normal (heavy right tail) with
    the same mean and standard deviation."""
    noise_std: NonNegFloat = 0.0
    """Gaussian noise added to every coordinate."""
    n_tokens: PosInt = 200_000
    """Training tokens to generate."""
    seed: int = 0
    """Seed of the features and the samples."""

    def __post_init__(self) -> None:
        require(self.active <= self.n_features, "active", self.active,
                f"<= n_features={self.n_features}")
        if self.magnitude_dist == "lognormal":
            require(self.magnitude_mean > 0, "magnitude_mean", self.magnitude_mean,
                    "> 0 for lognormal magnitudes")


class SyntheticData(NamedTuple):
    features: Tensor
    """[n_features, d] true unit-norm directions."""
    probs: Tensor
    """[n_features] firing probability of each feature."""


# SAE init draws torch.randn(d_sae, d_in) after torch.manual_seed(train seed); seeding the features'
# generator with the bare data seed would give the same stream, so with equal seeds the decoder
# would start AT the true features and recovery would be vacuous. A fixed mix keeps the two apart
# (it never maps a seed to itself: seed * 1_000_002 is even, -0x5EED odd, modulo 2**63).
_FEATURE_SEED_MULT = 1_000_003
_FEATURE_SEED_SALT = 0x5EED


def feature_seed(seed: int) -> int:
    """Seed of the true-feature generator for data seed `seed`; never equal to `seed` itself."""
    return (seed * _FEATURE_SEED_MULT + _FEATURE_SEED_SALT) % 2**63


def make_features(cfg: SyntheticConfig) -> SyntheticData:
    import torch

    g = torch.Generator().manual_seed(feature_seed(cfg.seed))
    features = torch.randn(cfg.n_features, cfg.d, generator=g)
    features /= features.norm(dim=1, keepdim=True)
    weights = torch.arange(1, cfg.n_features + 1, dtype=torch.float64) ** -cfg.freq_exponent
    probs = (cfg.active * weights / weights.sum()).clamp(max=1.0).float()
    return SyntheticData(features, probs)


def sample(
    cfg: SyntheticConfig, data: SyntheticData, n: int, seed: int, chunk: int = 16_384
) -> Tensor:
    """n rows [n, d] drawn from the generative model above."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, cfg.d)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        on = torch.rand(m, cfg.n_features, generator=g) < data.probs  # [m, F]
        coeffs = on * magnitudes(cfg, torch.randn(m, cfg.n_features, generator=g))
        x = coeffs @ data.features
        if cfg.noise_std:
            x += cfg.noise_std * torch.randn(m, cfg.d, generator=g)
        out[start : start + m] = x
    return out


def magnitudes(cfg: SyntheticConfig, normal: Tensor) -> Tensor:
    """Magnitudes of cfg's distribution from standard normal draws (same shape)."""
    if cfg.magnitude_dist == "normal":
        return (normal * cfg.magnitude_std + cfg.magnitude_mean).clamp_min(0)
    # log-normal exp(mu + sigma n) with mean m and std s: sigma^2 = ln(1 + s^2/m^2), mu below
    sigma2 = math.log1p((cfg.magnitude_std / cfg.magnitude_mean) ** 2)
    return (normal * math.sqrt(sigma2) + math.log(cfg.magnitude_mean) - sigma2 / 2).exp()


class Recovery(NamedTuple):
    mean_max_cos: float
    """Mean over true features of the best cosine similarity with any decoder row."""
    frac_matched: float
    """Share of true features whose best decoder row has cosine >= `threshold`."""


def recovery(W_dec: Tensor, features: Tensor, threshold: float = 0.9) -> Recovery:
    """Score a decoder [d_sae, d] against the true features [F, d]."""
    W = W_dec.detach().float()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    best = (features.float() @ W.T).max(dim=1).values  # [F]
    return Recovery(best.mean().item(), (best >= threshold).float().mean().item())
