"""The generator's knobs do what their docstrings say, checked against known moments."""

import math

import pytest
import torch

from sae_lab.config import ConfigError
from sae_lab.data.synthetic import SyntheticConfig, magnitudes, make_features, sample


@pytest.mark.parametrize("dist", ["normal", "lognormal"])
def test_magnitudes_have_the_configured_mean_and_std(dist):
    cfg = SyntheticConfig(magnitude_mean=2.0, magnitude_std=0.5, magnitude_dist=dist)
    m = magnitudes(cfg, torch.randn(400_000, generator=torch.Generator().manual_seed(0)))
    assert m.mean().item() == pytest.approx(2.0, abs=0.01)
    assert m.std().item() == pytest.approx(0.5, abs=0.01)
    assert m.min().item() >= 0


def test_lognormal_magnitudes_have_a_heavy_right_tail():
    """Same mean and std, but the log-normal's 99.99th percentile lies far above the normal's:
    std 1 at mean 1 gives sigma^2 = ln 2, quantile exp(mu + 3.72 sigma) ~ 13 against 4.7."""
    n = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    q = {d: magnitudes(SyntheticConfig(magnitude_std=1.0, magnitude_dist=d), n).quantile(0.9999)
         for d in ("normal", "lognormal")}
    sigma = math.sqrt(math.log(2))
    assert q["lognormal"].item() == pytest.approx(math.exp(-sigma**2 / 2 + 3.719 * sigma), rel=0.1)
    assert q["normal"].item() == pytest.approx(1 + 3.719, rel=0.05)


def test_frequencies_follow_the_exponent_and_the_active_count():
    cfg = SyntheticConfig(d=16, n_features=64, active=3.0, freq_exponent=1.0)
    probs = make_features(cfg).probs
    assert probs.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert (probs[0] / probs[9]).item() == pytest.approx(10.0, rel=1e-5)  # rank^-1


def test_noise_adds_its_variance():
    base = {"d": 16, "n_features": 32, "active": 2.0, "magnitude_std": 0.0}
    quiet, noisy = SyntheticConfig(**base), SyntheticConfig(**base, noise_std=0.3)
    data = make_features(quiet)
    x0, x1 = sample(quiet, data, 50_000, seed=3), sample(noisy, data, 50_000, seed=3)
    extra = x1.pow(2).sum(dim=1).mean() - x0.pow(2).sum(dim=1).mean()
    assert extra.item() == pytest.approx(16 * 0.09, rel=0.05)


def test_lognormal_needs_a_positive_mean():
    with pytest.raises(ConfigError, match="magnitude_mean"):
        SyntheticConfig(magnitude_mean=0.0, magnitude_dist="lognormal")
