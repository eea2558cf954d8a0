"""The sparse TopK/BatchTopK path against the dense reference: same selection, same numbers.

The dense path (cfg.decoder="dense") scatters codes into [B, d_sae] and lets autograd do the rest;
the sparse path (sae_lab.sae.sparse_topk) must give the same outputs, losses and gradients.
"""

import copy
import pickle

import pytest
import torch
from helpers.checks import assert_same

from sae_lab import ARCHITECTURES, sae_config
from sae_lab.sae import sparse

SPARSE_ARCHS = ("topk", "batchtopk", "matryoshka")


def pair(arch: str, d_in=16, d_sae=128, k=4, dtype="float64", seed=0, **kw):
    """(dense, sparse) SAEs with identical weights and state."""
    torch.manual_seed(seed)
    cfg = sae_config(arch, d_in=d_in, d_sae=d_sae, k=k, dtype=dtype,
                    decoder="dense", **kw)
    dense = ARCHITECTURES[arch](cfg)
    with torch.no_grad():  # biases away from 0 so that their gradients are not trivial
        dense.b_enc.normal_(0, 0.1)
        dense.b_dec.normal_(0, 0.1)
    fast = copy.deepcopy(dense)
    fast.cfg = sae_config(**{**cfg.to_dict(), "decoder": "sparse"})
    return dense, fast


def step_both(dense, fast, x, step=0):
    outs = []
    for sae in (dense, fast):
        sae.zero_grad(set_to_none=True)
        out = sae.training_loss(x, step)
        out.loss.backward()
        sae.after_step(out, step)
        outs.append(out)
    return outs


# --- the selection kernels ------------------------------------------------------------------


@pytest.mark.parametrize("group", [8, 0, 2, 3, 4])  # 2 recurses three levels; 3 falls back
@pytest.mark.parametrize("ties", [False, True])
def test_topk_rows_is_exact(group, ties):
    torch.manual_seed(0)
    pre = torch.randn(64, 256)
    if ties:  # few distinct values: most of the top k are tied
        pre = (pre * 2).round()
    k = 8
    values, indices = sparse.topk_rows(pre, k, group)
    want = pre.topk(k, dim=-1).values
    torch.testing.assert_close(values.sort(dim=-1, descending=True).values, want, rtol=0, atol=0)
    torch.testing.assert_close(pre.gather(1, indices), values, rtol=0, atol=0)
    assert (indices.sort(dim=-1).values.diff(dim=-1) > 0).all()  # k distinct latents per row


@pytest.mark.parametrize("group", [None, 0, 4, 16])
@pytest.mark.parametrize("ties", [False, True])
def test_top_positive_flat_is_exact(group, ties):
    torch.manual_seed(1)
    pre = torch.randn(32, 256) - 1.0
    if ties:
        pre = (pre * 2).round()
    n = 300
    values, index = sparse.top_positive_flat(pre, n, group)
    top = pre.flatten().topk(n).values
    want = top[top > 0]
    torch.testing.assert_close(values.sort(descending=True).values, want, rtol=0, atol=0)
    torch.testing.assert_close(pre.flatten()[index], values, rtol=0, atol=0)
    assert (index.diff() > 0).all()  # sorted, distinct


def test_top_positive_flat_edge_cases():
    neg = -torch.rand(8, 64) - 0.1
    values, index = sparse.top_positive_flat(neg, 16)
    assert values.numel() == 0 and index.numel() == 0
    pos = torch.rand(4, 8) + 0.1
    values, index = sparse.top_positive_flat(pos, 1000)  # more than there are
    assert torch.equal(index, torch.arange(32))


def test_pattern_densify_and_transpose_agree():
    torch.manual_seed(2)
    indices = torch.stack([torch.randperm(50)[:6] for _ in range(20)])  # distinct per row
    values = torch.randn(20, 6, dtype=torch.float64)
    pattern, order = sparse.SparsePattern.from_indices(indices, 50)
    flat = values.gather(1, order).flatten()
    z = torch.zeros(20, 50, dtype=torch.float64).scatter(1, indices, values)
    torch.testing.assert_close(pattern.densify(flat), z)
    torch.testing.assert_close(pattern.csr(flat).to_dense(), z)
    torch.testing.assert_close(pattern.csr_t(flat).to_dense(), z.T)
    assert torch.equal(pattern.fired(), (z != 0).any(dim=0))


def test_sparse_functions_match_autograd():
    """decode and gather_pre_acts against the dense expressions, every input's gradient."""
    torch.manual_seed(3)
    B, d_in, d_sae, k = 10, 6, 40, 5
    x = torch.randn(B, d_in, dtype=torch.float64, requires_grad=True)
    W_enc = torch.randn(d_in, d_sae, dtype=torch.float64, requires_grad=True)
    b_enc = torch.randn(d_sae, dtype=torch.float64, requires_grad=True)
    b_dec = torch.randn(d_in, dtype=torch.float64, requires_grad=True)
    W_dec = torch.randn(d_sae, d_in, dtype=torch.float64, requires_grad=True)
    target = torch.randn(B, d_in, dtype=torch.float64)
    inputs = (x, W_enc, b_enc, b_dec, W_dec)

    def grads(loss):
        return torch.autograd.grad(loss, inputs)

    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, indices, values.relu())
    want = grads(((z @ W_dec) - target).pow(2).sum())

    pattern, order = sparse.SparsePattern.from_indices(indices, d_sae)
    flat = values.detach().gather(1, order).flatten()
    v = sparse.gather_pre_acts(flat, pattern, x, W_enc, b_enc, b_dec).relu()
    got = grads((sparse.decode(v, pattern, W_dec) - target).pow(2).sum())
    for g, w, name in zip(got, want, ("x", "W_enc", "b_enc", "b_dec", "W_dec"), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)


def test_empty_pattern_decodes_to_zero():
    W_dec = torch.randn(8, 3, requires_grad=True)
    pattern = sparse.SparsePattern.from_flat(torch.zeros(0, dtype=torch.long), 4, 8)
    out = sparse.decode(torch.zeros(0, requires_grad=True), pattern, W_dec)
    assert torch.equal(out, torch.zeros(4, 3))
    out.sum().backward()
    assert torch.equal(W_dec.grad, torch.zeros(8, 3))


# --- the SAEs: sparse path == dense path -----------------------------------------------------


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
@pytest.mark.parametrize("dead", ["none", "one", "few", "some", "all"])
def test_sparse_step_matches_dense_float64(arch, dead):
    dense, fast = pair(arch, dead_tokens=100)
    # AuxK (k_aux = 8) runs on dense products over the dead block for "one" and "few" (k_aux >=
    # n_dead / AUXK_DENSE_BLOCK_DENSITY), on the sparse kernels for "some" and "all"
    n_dead = {"none": 0, "one": 1, "few": 20, "some": 80, "all": 128}[dead]
    for sae in (dense, fast):
        sae.tokens_since_fired[:n_dead] = 1000
    torch.manual_seed(4)
    x = torch.randn(64, 16, dtype=torch.float64)
    outs = step_both(dense, fast, x)
    assert (outs[0].parts["aux"] > 0) == (n_dead > 0)  # AuxK really ran (or really did not)
    assert_same(dense, fast, outs)


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_sparse_step_matches_dense_with_ties(arch):
    """Duplicated encoder columns and quantised inputs: many exactly equal pre-activations."""
    dense, fast = pair(arch, d_sae=64, k=6, dead_tokens=100)
    with torch.no_grad():
        for sae in (dense, fast):
            sae.W_enc[:, 32:] = sae.W_enc[:, :32]  # latent i and i + 32 always tie
            sae.W_enc.mul_(4).round_().div_(4)
            sae.b_enc.zero_()
            sae.b_dec.zero_()
            sae.tokens_since_fired[::2] = 1000  # ties among dead latents too
    torch.manual_seed(5)
    x = torch.randint(-2, 3, (48, 16)).double()
    pre = dense.pre_acts(x)
    assert (pre[:, :32] == pre[:, 32:]).all()
    assert_same(dense, fast, step_both(dense, fast, x))


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_sparse_step_matches_dense_when_nothing_fires(arch):
    dense, fast = pair(arch, dead_tokens=100)
    with torch.no_grad():
        for sae in (dense, fast):
            sae.b_enc.fill_(-100.0)  # every pre-activation negative: no active latent
            sae.tokens_since_fired[:] = 1000
    x = torch.randn(16, 16, dtype=torch.float64)
    outs = step_both(dense, fast, x)
    assert outs[1].l0.item() == 0 and not outs[1].fired.any()
    assert_same(dense, fast, outs)


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_sparse_step_follows_the_k_schedule(arch):
    dense, fast = pair(arch, k=4, k_start=16, k_schedule_steps=10)
    x = torch.randn(32, 16, dtype=torch.float64) + 1.0
    outs = step_both(dense, fast, x, step=5)
    assert outs[1].parts["mse"] > 0
    assert_same(dense, fast, outs)
    assert fast.current_k(5) == 10 and outs[1].l0.item() == pytest.approx(10, abs=0.5)


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_sparse_step_matches_dense_float32_realistic(arch):
    """d_in=384, d_sae=6144, k=32 (the benchmark shape, smaller batch), AuxK on 10% dead."""
    dense, fast = pair(arch, d_in=384, d_sae=6144, k=32, dtype="float32", dead_tokens=10**6)
    for sae in (dense, fast):
        sae.tokens_since_fired[:614] = 10**7
    torch.manual_seed(6)
    x = torch.randn(256, 384)
    assert_same(dense, fast, step_both(dense, fast, x), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_training_trajectories_agree(arch):
    """30 Adam steps, same seed: the weights and the held-out FVU of both paths agree."""
    extra = {"threshold_momentum": 0.5} if arch == "batchtopk" else {}  # settles in 30 steps
    dense, fast = pair(arch, d_in=16, d_sae=96, k=4, dead_tokens=256, **extra)
    torch.manual_seed(7)
    features = torch.randn(48, 16, dtype=torch.float64)
    codes = (torch.rand(32 * 64, 48) < 4 / 48) * torch.rand(32 * 64, 48)  # ~4 active features
    data = codes.double() @ features
    held_out = data[30 * 64 :]  # rows no step trains on
    untrained = held_out_fvu(copy.deepcopy(dense), held_out)
    aux = []
    for sae in (dense, fast):
        sae.tokens_since_fired[::3] = 1000  # a third start dead: AuxK takes part
        opt = torch.optim.Adam(sae.parameters(), lr=1e-2)
        for i in range(30):
            out = sae.training_loss(data[64 * i : 64 * (i + 1)], i)
            aux.append(out.parts["aux"].item())
            out.loss.backward()
            sae.after_step(out, i)
            sae.remove_parallel_grads()
            opt.step()
            opt.zero_grad()
            sae.normalize_decoder()
    assert max(aux) > 0
    for name, p in dense.named_parameters():
        torch.testing.assert_close(dict(fast.named_parameters())[name], p, rtol=1e-8, atol=1e-8)
    fvu = [held_out_fvu(sae, held_out) for sae in (dense, fast)]
    assert fvu[0] < 0.6 * untrained  # it learned something
    assert abs(fvu[1] - fvu[0]) <= 0.01 * fvu[0]


def held_out_fvu(sae, x):
    sae.eval()
    with torch.no_grad():
        return ((sae(x) - x).pow(2).sum() / (x - x.mean(dim=0)).pow(2).sum()).item()


def test_decoder_switch_picks_the_path(monkeypatch):
    calls = []
    real = sparse.decode
    monkeypatch.setattr(sparse, "decode", lambda *a: calls.append(1) or real(*a))
    dense, fast = pair("topk")
    x = torch.randn(8, 16, dtype=torch.float64)
    dense.training_loss(x, 0)
    assert calls == []
    fast.training_loss(x, 0)
    assert calls == [1]


def test_sparse_step_under_cpu_bf16_autocast():
    """bf16 autocast (what bf16-mixed does on CUDA) runs, and stays near the float32 result."""
    _, fast = pair("topk", d_in=32, d_sae=256, k=8, dtype="float32")
    dense = copy.deepcopy(fast)
    dense.cfg = sae_config(**{**fast.cfg.to_dict(), "decoder": "dense"})
    fast.tokens_since_fired[:50] = 10**12
    dense.tokens_since_fired[:50] = 10**12
    x = torch.randn(64, 32)
    want = fast.training_loss(x, 0).loss.item()
    fast.zero_grad()
    for sae in (fast, dense):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sae.training_loss(x, 0)
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(want, rel=0.05)
        assert sae.W_enc.grad.dtype == torch.float32 and torch.isfinite(sae.W_enc.grad).all()
    cos = torch.nn.functional.cosine_similarity(
        fast.W_dec.grad.flatten(), dense.W_dec.grad.flatten(), dim=0
    )
    assert cos > 0.98


def test_pre_activation_scratch_is_reused_and_never_copied():
    _, fast = pair("topk")
    x = torch.randn(8, 16, dtype=torch.float64)
    first = fast.training_loss(x, 0).loss.item()
    buf = fast._sparse._pre.tensor
    assert buf is not None and buf.shape == (8, 128)
    assert fast.training_loss(x, 0).loss.item() == first
    assert fast._sparse._pre.tensor is buf
    assert not any("_pre" in k for k in fast.state_dict())
    assert copy.deepcopy(fast)._sparse._pre.tensor is None
    assert pickle.loads(pickle.dumps(fast))._sparse._pre.tensor is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", SPARSE_ARCHS)
def test_sparse_step_matches_dense_on_cuda(arch):
    dense, fast = pair(arch, d_in=64, d_sae=1024, k=16, dtype="float32")
    for sae in (dense, fast):
        sae.cuda().tokens_since_fired[:100] = 10**12
    x = torch.randn(256, 64, device="cuda")
    assert_same(dense, fast, step_both(dense, fast, x), rtol=2e-5, atol=2e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # what precision="bf16-mixed" does
        out = fast.training_loss(x, 0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(fast.W_enc.grad).all()


def test_auxk_takes_the_dense_block_at_the_benchmark_shape(monkeypatch):
    """10% of 6144 latents dead, k_aux = 192 (the benchmark's AuxK row): the dense products over
    the dead block are about twice as fast as the sparse kernels there (measured, see
    AUXK_DENSE_BLOCK_DENSITY), so only the main selection builds a sparse pattern."""
    _, fast = pair("topk", d_in=384, d_sae=6144, k=32, dtype="float32", dead_tokens=10**6)
    fast.tokens_since_fired[:614] = 10**7
    built = []
    from_indices = sparse.SparsePattern.from_indices.__func__
    monkeypatch.setattr(sparse.SparsePattern, "from_indices", classmethod(
        lambda cls, indices, d_sae: built.append(indices.shape[1]) or from_indices(cls, indices,
                                                                                    d_sae)))
    out = fast.training_loss(torch.randn(64, 384), 0)
    assert out.parts["aux"] > 0
    assert built == [32]


@pytest.mark.parametrize("arch", ["topk", "matryoshka"])
def test_mse_part_is_the_full_reconstruction_error(arch):
    _, fast = pair(arch, dead_tokens=100)
    x = torch.randn(32, 16, dtype=torch.float64)
    out = fast.training_loss(x, 0)
    expected = (out.x_hat.detach() - x).pow(2).mean()
    assert out.parts["mse"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert (out.loss.item() > out.parts["mse"].item() * 16 * 1.01) == (arch == "matryoshka")
