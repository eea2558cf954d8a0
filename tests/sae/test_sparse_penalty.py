"""The sparse path of the penalty SAEs (relu, jumprelu, gated; sae_lab.sae.sparse_penalty) against
their dense reference (cfg.decoder="dense"): same outputs, losses and every gradient, as
test_sparse does for TopK; and the dense path without its wasted products."""

import copy
import pickle

import pytest
import torch
from helpers.checks import assert_same
from torch.utils.flop_counter import FlopCounterMode

from sae_lab import ARCHITECTURES, sae_config
from sae_lab.sae import sparse, sparse_penalty
from sae_lab.sae.base import centred_matmul

PENALTY_ARCHS = ("relu", "jumprelu", "gated")


def pair(arch, d_in=16, d_sae=128, dtype="float64", cut=1.0, seed=0, fast="sparse", **kw):
    """(dense, fast) SAEs with identical weights; pre-activations ~ N(0, 1) shifted so that
    entries above `cut` are active (relu, gated: bias -cut; jumprelu: threshold cut)."""
    torch.manual_seed(seed)
    if arch == "jumprelu":
        kw = {"threshold_init": max(cut, 0.5), "bandwidth": 0.5, **kw}  # a wide kernel
    cfg = sae_config(arch, d_in=d_in, d_sae=d_sae, dtype=dtype, decoder="dense", **kw)
    dense = ARCHITECTURES[arch](cfg)
    with torch.no_grad():
        dense.b_dec.normal_(0, 0.1)
        dense.W_dec.mul_(torch.rand(d_sae, 1, dtype=dense.W_dec.dtype) + 0.5)  # norms matter
        if arch == "relu":
            dense.b_enc.normal_(-cut, 0.1)
        if arch == "jumprelu":
            dense.b_enc.normal_(-min(cut, 0), 0.1)  # cut < 0: everything far above threshold
            dense.log_threshold.add_(torch.randn(d_sae, dtype=dense.W_enc.dtype) * 0.1)
        if arch == "gated":
            dense.b_gate.normal_(-cut, 0.1)
            dense.b_mag.normal_(0, 0.5)  # some open gates with a negative magnitude
            dense.r_mag.normal_(0, 0.3)
    other = copy.deepcopy(dense)
    other.cfg = sae_config(**{**cfg.to_dict(), "decoder": fast})
    return dense, other


def step_both(dense, fast, x, scale=0.7):
    outs = []
    for sae in (dense, fast):
        sae.zero_grad(set_to_none=True)
        out = sae.training_loss(x, 0, scale)
        out.loss.backward()
        sae.after_step(out, 0)
        outs.append(out)
    return outs


def count_sparse_decodes(monkeypatch):
    calls = []
    real = sparse.decode
    monkeypatch.setattr(sparse, "decode", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("arch", PENALTY_ARCHS)
@pytest.mark.parametrize("cut", [1.0, 2.5, 100.0, -100.0])  # 16%, <1%, nothing, everything on
def test_sparse_step_matches_dense_float64(arch, cut, monkeypatch):
    dense, fast = pair(arch, cut=cut)
    calls = count_sparse_decodes(monkeypatch)
    x = torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    outs = step_both(dense, fast, x)
    assert calls  # the sparse path really ran
    if abs(cut) < 10:
        assert 0 < outs[0].l0 < 128
        grad = {"relu": "b_enc", "jumprelu": "log_threshold", "gated": "r_mag"}[arch]
        assert getattr(dense, grad).grad.abs().sum() > 0  # a non-trivial gradient is compared
    assert_same(dense, fast, outs)


@pytest.mark.parametrize("arch", ["jumprelu", "gated"])
def test_sparse_step_matches_dense_with_dead_latents_float64(arch, monkeypatch):
    """With the AuxK revival term on (half the latents dead), the sparse path computes the dead
    latents' would-be activations for those columns alone: same loss and gradients."""
    dense, fast = pair(arch, cut=1.0, dead_tokens=1)
    for sae in (dense, fast):
        sae.tokens_since_fired[::2] = 10  # every other latent dead
    calls = count_sparse_decodes(monkeypatch)
    x = torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    outs = step_both(dense, fast, x)
    assert calls and outs[0].parts["auxk"] > 0  # the revival term is in the compared loss
    assert_same(dense, fast, outs)


@pytest.mark.parametrize("arch", PENALTY_ARCHS)
def test_sparse_step_matches_dense_float32_realistic(arch):
    """d_in 384, d_sae 6144 (the benchmark's shape, batch 128), L0 about 30."""
    dense, fast = pair(arch, d_in=384, d_sae=6144, dtype="float32", cut=2.6)
    x = torch.randn(128, 384, generator=torch.Generator().manual_seed(6))
    outs = step_both(dense, fast, x)
    assert 10 < outs[0].l0 < 60
    assert_same(dense, fast, outs, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("arch", PENALTY_ARCHS)
def test_training_curves_agree_float32(arch, monkeypatch):
    """14 Adam steps in float32 from 16% active: 'auto' switches to the sparse kernels once the
    measured density falls below SPARSE_BELOW_DENSITY, and its loss curve and held-out FVU stay
    within 1% of the dense reference's."""
    dense, auto = pair(arch, d_in=16, d_sae=96, dtype="float32", cut=1.0, fast="auto",
                       sparsity_coef=4.0)
    torch.manual_seed(7)
    features = torch.randn(48, 16)
    codes = (torch.rand(15 * 64, 48) < 4 / 48) * torch.rand(15 * 64, 48)
    data = codes @ features
    held_out = data[14 * 64:]
    calls = count_sparse_decodes(monkeypatch)
    curves, sparse_steps = [], []
    for sae in (dense, auto):
        curve = []
        opt = torch.optim.Adam(sae.parameters(), lr=2e-2)
        for i in range(14):
            n = len(calls)
            out = sae.training_loss(data[64 * i: 64 * (i + 1)], i)
            curve.append(out.loss.item())
            if sae is auto and len(calls) > n:
                sparse_steps.append(i)
            out.loss.backward()
            sae.after_step(out, i)
            sae.remove_parallel_grads()
            opt.step()
            opt.zero_grad()
            sae.normalize_decoder()
        curves.append(torch.tensor(curve))
    assert sparse_steps and sparse_steps[0] > 0 and sparse_steps[-1] == 13  # dense, then sparse
    assert curves[0][-1] < 0.5 * curves[0][0]  # it trained
    torch.testing.assert_close(curves[1], curves[0], rtol=0.01, atol=0)
    fvu = [held_out_fvu(sae, held_out) for sae in (dense, auto)]
    assert abs(fvu[1] - fvu[0]) <= 0.01 * fvu[0]


def held_out_fvu(sae, x):
    with torch.no_grad():
        return ((sae(x) - x).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum()).item()


@pytest.mark.parametrize("arch", PENALTY_ARCHS)
def test_decoder_setting_picks_the_path(arch, monkeypatch):
    calls = count_sparse_decodes(monkeypatch)
    x = torch.randn(32, 16, dtype=torch.float64)
    dense, fast = pair(arch, cut=2.5)
    _, auto = pair(arch, cut=2.5, fast="auto")
    dense._sparse.density = 0.0  # 'dense' ignores the measured density
    dense.training_loss(x, 0)
    assert calls == []
    auto.training_loss(x, 0)  # 'auto' starts dense, measures a low density...
    assert calls == [] and auto._sparse.density < sparse_penalty.SPARSE_BELOW_DENSITY
    auto.training_loss(x, 1)  # ... and goes sparse from the next step
    assert calls
    del calls[:]
    fast._sparse.density = 1.0  # 'sparse' ignores it
    fast.training_loss(x, 0)
    assert calls


def test_scratch_is_reused_and_never_saved():
    _, fast = pair("relu")
    x = torch.randn(8, 16, dtype=torch.float64)
    first = fast.training_loss(x, 0).loss.item()
    buf = fast._sparse._pre.tensor
    assert buf is not None and buf.shape == (8, 128)
    assert fast.training_loss(x, 0).loss.item() == first
    assert fast._sparse._pre.tensor is buf
    assert set(fast.state_dict()) == {"W_enc", "W_dec", "b_enc", "b_dec", "tokens_since_fired"}
    assert pickle.loads(pickle.dumps(fast))._sparse._pre.tensor is None


# --- the dense path: no wasted products ----------------------------------------------------------


def test_centred_matmul_values_and_gradients_are_the_plain_ones():
    torch.manual_seed(8)
    x = torch.randn(6, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    W = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    g = torch.randn(6, 9, dtype=torch.float64)
    plain = (x - b) @ W
    want = torch.autograd.grad((plain * g).sum(), (b, W))
    got_out = centred_matmul(x, b, W)
    got = torch.autograd.grad((got_out * g).sum(), (b, W))
    assert torch.equal(got_out, plain)
    for a, w in zip(got, want, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-12, atol=1e-12)


# Dense products of a training step, in units of B * d_in * d_sae multiply-adds. Before: relu 6
# (the gradient of x - b_dec was a full product), jumprelu 6, gated 11 (two encoder products and
# their gradients).
DENSE_PRODUCTS = {"relu": 5, "jumprelu": 5, "gated": 7}


@pytest.mark.parametrize("arch", PENALTY_ARCHS)
def test_dense_step_does_only_the_needed_products(arch):
    B, d_in, d_sae = 64, 16, 256
    dense, _ = pair(arch, d_in=d_in, d_sae=d_sae, dtype="float32", cut=2.5)
    x = torch.randn(B, d_in)
    with FlopCounterMode(display=False) as counter:
        dense.training_loss(x, 0).loss.backward()
    assert counter.get_total_flops() / (2 * B * d_in * d_sae) == pytest.approx(
        DENSE_PRODUCTS[arch], abs=0.2)  # + matrix-vector products
