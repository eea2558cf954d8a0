"""Matryoshka BatchTopK: nested prefixes, each reconstructing x (arXiv 2503.17547)."""

import pytest
import torch

from sae_lab.sae import ARCHITECTURES, ConfigError, sae_config
from sae_lab.sae.matryoshka import prefix_ends


def make(**kw):
    torch.manual_seed(0)
    cfg = sae_config("matryoshka", d_in=8, d_sae=16, k=3, **kw)
    return ARCHITECTURES["matryoshka"](cfg)


def test_prefix_ends_from_group_fractions():
    assert prefix_ends((1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2), 1024) == [64, 128, 256, 512, 1024]
    assert prefix_ends((0.25, 0.75), 16) == [4, 16]
    assert make(group_fractions=[0.25, 0.75]).prefix_ends == [4, 16]


@pytest.mark.parametrize("decoder", ["dense", "sparse"])
def test_loss_is_the_sum_over_prefixes(decoder):
    """By hand: the kept codes z (BatchTopK), then sum_m ||x - z[:, :m] W_dec[:m] - b_dec||^2."""
    sae = make(group_fractions=[0.25, 0.25, 0.5], decoder=decoder)
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(32, 8)
    out = sae.training_loss(x, 0)
    with torch.no_grad():
        pre = sae.pre_acts(x)
        flat = pre.relu().flatten()
        kept = torch.zeros_like(flat).scatter(0, flat.topk(3 * 32).indices, 1).view_as(pre)
        z = pre.relu() * kept
        expected = sum(
            (x - (z[:, :m] @ sae.W_dec[:m] + sae.b_dec)).pow(2).sum(-1).mean() for m in (4, 8, 16)
        )
        full = z @ sae.W_dec + sae.b_dec
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(out.x_hat, full, rtol=1e-5, atol=1e-5)
    # one prefix is plain BatchTopK: the loss reduces to its reconstruction error
    single = make(group_fractions=[1.0], decoder=decoder)
    bt = ARCHITECTURES["batchtopk"](sae_config("batchtopk", d_in=8, d_sae=16, k=3,
                                                 decoder=decoder))
    bt.load_state_dict(single.state_dict())
    assert single.training_loss(x, 0).loss.item() == pytest.approx(
        bt.training_loss(x, 0).loss.item(), rel=1e-6)


def test_early_latents_get_gradient_from_every_prefix():
    """A latent in the first group is in every prefix: its decoder row's gradient is the sum of
    each prefix's, so it differs from the full-reconstruction-only (BatchTopK) gradient."""
    sae = make(group_fractions=[0.25, 0.75], decoder="dense")
    x = torch.randn(64, 8)
    sae.training_loss(x, 0).loss.backward()
    g = sae.W_dec.grad.clone()
    bt = ARCHITECTURES["batchtopk"](sae_config("batchtopk", d_in=8, d_sae=16, k=3,
                                                 decoder="dense"))
    bt.load_state_dict(sae.state_dict())
    bt.training_loss(x, 0).loss.backward()
    assert not torch.allclose(g[:4], bt.W_dec.grad[:4])


@pytest.mark.parametrize(
    "fractions, culprit",
    [([0.5, 0.4], "summing to 1"), ([0.01, 0.99], "would be empty"),
     ([0.5, 0.0, 0.5], "must be > 0")],
)
def test_bad_group_fractions_are_one_line_errors(fractions, culprit):
    with pytest.raises(ConfigError, match=r"sae\.group_fractions.*" + culprit):
        sae_config("matryoshka", d_in=8, d_sae=16, k=3, group_fractions=fractions)


def test_inference_is_the_global_threshold():
    sae = make(token_norm=False).eval()
    with torch.no_grad():
        sae.threshold.fill_(0.3)
    x = torch.randn(16, 8)
    pre = sae.pre_acts(x)
    torch.testing.assert_close(sae.encode(x), pre.relu() * (pre > 0.3))
    assert sae.saelens_architecture == "jumprelu"
