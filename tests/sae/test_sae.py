"""Each architecture's maths, checked on small shapes."""

import dataclasses
import math

import pytest
import torch

from sae_lab import ARCHITECTURES, load, sae_config
from sae_lab.sae import ConfigError

ARCHS = sorted(ARCHITECTURES)


def step(sae, x, n):
    """One training batch's forward and post-batch update, as SAEModule does."""
    out = sae.training_loss(x, n)
    sae.after_step(out, n)
    return out


def make(arch: str, d_in: int = 16, d_sae: int = 64, **kw):
    if ARCHITECTURES[arch].k_based:
        kw.setdefault("k", 4)
    torch.manual_seed(0)
    return ARCHITECTURES[arch](sae_config(arch, d_in=d_in, d_sae=d_sae, **kw))


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_is_decode_of_encode(arch):
    sae = make(arch).eval()
    x = torch.randn(32, 16)
    torch.testing.assert_close(sae(x), sae.decode(sae.encode(x), x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_of_encode_without_x_is_in_the_units_of_x(arch):
    """decode(z) after encode(x) rescales with the scale of that encode (as SAELens does): on
    activations of norm ~3 sqrt(d_in) the normalised reconstruction would be off by a factor 3."""
    sae = make(arch, token_norm=True).eval()
    with torch.no_grad():
        sae.b_dec.fill_(0.5)  # a reconstruction that is not zero even where no latent fires
    x = 3 * torch.randn(32, 16)
    torch.testing.assert_close(sae.decode(sae.encode(x)), sae(x), rtol=0, atol=0)
    assert (sae.decode_normalized(sae.encode(x)) - sae(x)).abs().max() > 0.5


def test_decode_without_x_or_a_matching_encode_is_refused():
    sae = make("relu", token_norm=True).eval()
    z = torch.rand(8, 64)
    with pytest.raises(ValueError, match=r"call decode\(z, x\) \(no encode came before\)"):
        sae.decode(z)
    sae.encode(torch.randn(4, 16))
    with pytest.raises(ValueError, match=r"the last encode had \(4,\) tokens, z has \(8,\)") as e:
        sae.decode(z)
    assert "\n" not in str(e.value)
    plain = make("relu", token_norm=False).eval()  # nothing to rescale: decode(z) is plain
    torch.testing.assert_close(plain.decode(z), z @ plain.W_dec + plain.b_dec)


@pytest.mark.parametrize("arch", ARCHS)
def test_init_unit_norm_decoder_tied_encoder(arch):
    sae = make(arch)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    torch.testing.assert_close(sae.W_enc, sae.W_dec.T)
    assert sae.W_enc.shape == (16, 64) and sae.W_dec.shape == (64, 16)
    assert sae.b_dec.shape == (16,)


def test_b_dec_initialised_at_geometric_median():
    sae = make("relu")
    torch.manual_seed(1)
    x = torch.randn(1000, 16)
    x[:10] += 100.0  # 1% outliers drag the mean to ~1 but barely move the geometric median
    sae.init_from_data(x)
    assert x.mean(dim=0).min() > 0.8
    assert sae.b_dec.abs().max().item() < 0.2


def test_topk_has_exactly_k_nonzeros_per_row():
    sae = make("topk", k=5)
    x = torch.randn(64, 16) + 3.0  # positive pre-activations: ReLU removes none of the k
    z = sae.encode(x)
    pre = sae.pre_acts(x)
    assert ((pre > 0).sum(dim=1) >= 5).all()
    assert ((z != 0).sum(dim=1) == 5).all()
    out = sae.training_loss(x, step=0)
    assert out.l0.item() == 5


def test_batchtopk_keeps_k_times_batch_in_training_and_threshold_in_eval():
    sae = make("batchtopk", k=4, token_norm=False).train()
    x = torch.randn(32, 16) + 2.0
    z = sae.encode(x)
    assert (z != 0).sum().item() == 4 * 32
    assert (z != 0).sum(dim=1).unique().numel() > 1  # variable per token, k on average
    step(sae, x, 0)
    theta = sae.threshold.item()
    assert theta > 0
    sae.eval()
    pre = sae.pre_acts(x)
    z_eval = sae.encode(x)
    torch.testing.assert_close(z_eval, pre.relu() * (pre > theta))


def test_batchtopk_threshold_is_ema_of_smallest_kept():
    sae = make("batchtopk", k=4, threshold_momentum=0.5).train()
    x1, x2 = torch.randn(32, 16), torch.randn(32, 16)

    def smallest_kept(x):
        acts = sae.pre_acts(x).relu().flatten()
        return acts.topk(4 * 32).values.min().item()

    m1, m2 = smallest_kept(x1), smallest_kept(x2)
    step(sae, x1, 0)
    assert sae.threshold.item() == pytest.approx(m1, rel=1e-5)
    step(sae, x2, 1)
    assert sae.threshold.item() == pytest.approx(0.5 * m1 + 0.5 * m2, rel=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_and_training_loss_leave_state_alone(arch):
    """Training-state updates happen in `after_step` only: encode (train or eval mode) and
    training_loss are pure."""
    sae = make(arch).train()
    x = torch.randn(32, 16)
    sae.tokens_since_fired.fill_(5)
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    sae.encode(x)
    sae.training_loss(x, 0)
    sae.eval().encode(x)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, before[k]), k
    out = sae.train().training_loss(x, 0)
    sae.after_step(out, 0)
    expected = torch.where(out.fired, 0, 5 + 32)
    assert torch.equal(sae.tokens_since_fired, expected) and out.fired.any()


def test_batchtopk_threshold_waits_for_the_k_schedule():
    sae = make("batchtopk", k=4, k_start=16, k_schedule_steps=10).train()
    x = torch.randn(32, 16)
    step(sae, x, 9)  # k is still above its target: the estimate would be too low
    assert sae.threshold.item() == 0
    step(sae, x, 10)
    assert sae.threshold.item() > 0
    explicit = make("batchtopk", k=4, k_start=16, k_schedule_steps=10, threshold_start_step=0)
    step(explicit.train(), x, 0)
    assert explicit.threshold.item() > 0


def test_jumprelu_threshold_gets_nonzero_gradient():
    sae = make("jumprelu", bandwidth=0.5, threshold_init=0.3)
    x = torch.randn(256, 16)
    out = sae.training_loss(x, step=0)
    out.loss.backward()
    g = sae.log_threshold.grad
    assert g is not None and g.abs().sum() > 0
    # Latents with no pre-activation inside the kernel window get exactly zero.
    pre = sae.pre_acts(x).detach()
    near = ((pre - sae.threshold.detach()).abs() < 0.25).any(dim=0)
    assert (g[~near] == 0).all() and (g[near] != 0).any()


def test_jumprelu_threshold_gradient_value():
    """The straight-through gradients of eqs. 11-12 (Rajamanoharan et al. 2024), by hand:
    d loss / d theta_i = sum_b [ dL/dz_bi * -(theta_i / eps) + lam * -(1 / eps) ] K_bi / B
    (mean over the batch of the L0 term), and log_threshold's gradient is theta_i times that."""
    eps, lam = 0.5, 0.7
    sae = make("jumprelu", bandwidth=eps, threshold_init=0.3, sparsity_coef=lam)
    x = torch.randn(256, 16)
    out = sae.training_loss(x, step=0)
    out.loss.backward()
    with torch.no_grad():
        pre = sae.pre_acts(x)
        theta = sae.threshold
        z = pre * (pre > theta)
        x_hat = sae.decode_normalized(z)
        dL_dz = (2 * (x_hat - x) @ sae.W_dec.T) / x.shape[0]  # d recon / d z, recon = mean_b sum
        K = ((pre - theta).abs() < eps / 2).to(pre.dtype)
        d_theta = (dL_dz * -(theta / eps) * K).sum(0) + lam * (-(1 / eps) * K).sum(0) / x.shape[0]
    torch.testing.assert_close(sae.log_threshold.grad, d_theta * theta, rtol=1e-4, atol=1e-6)
    assert (d_theta != 0).sum() > 10  # the check is not vacuous


def test_jumprelu_encode_is_pre_times_step():
    sae = make("jumprelu", threshold_init=0.5, token_norm=False)
    x = torch.randn(32, 16)
    pre = sae.pre_acts(x)
    torch.testing.assert_close(sae.encode(x), pre * (pre > 0.5))


def test_gated_aux_loss_sends_no_gradient_to_decoder():
    """The decoder's gradient from the SAE's own loss equals that of the loss without its aux
    term: the aux reconstruction goes through a frozen (detached) decoder (eq. 8)."""
    sae = make("gated")
    x = torch.randn(64, 16)
    with torch.no_grad():
        sae.b_gate.fill_(0.1)  # some gates open, so the aux term has something to differentiate
    out = sae.training_loss(x, 0)
    out.loss.backward()
    grad_full = sae.W_dec.grad.clone()
    sae.zero_grad()
    pi_gate, pi_mag = sae.gate_and_mag(x)
    z = (pi_gate > 0).to(pi_mag.dtype) * pi_mag.relu()
    recon = (sae.decode_normalized(z) - x).pow(2).sum(-1).mean()
    sparsity = (pi_gate.relu() * sae.W_dec.norm(dim=1)).sum(-1).mean()
    (recon + sae.cfg.lam * sparsity).backward()
    torch.testing.assert_close(grad_full, sae.W_dec.grad, rtol=1e-5, atol=1e-7)
    assert out.parts["aux"].item() > 0
    # ... and the aux term does reach the gate path (W_enc), else it would train nothing.
    sae.zero_grad()
    sae.training_loss(x, 0).loss.backward()
    with_aux = sae.W_enc.grad.clone()
    sae.zero_grad()
    pi_gate, pi_mag = sae.gate_and_mag(x)
    z = (pi_gate > 0).to(pi_mag.dtype) * pi_mag.relu()
    recon = (sae.decode_normalized(z) - x).pow(2).sum(-1).mean()
    (recon + sae.cfg.lam * (pi_gate.relu() * sae.W_dec.norm(dim=1)).sum(-1).mean()).backward()
    assert not torch.allclose(with_aux, sae.W_enc.grad)


def test_gated_shares_weights_through_r_mag():
    sae = make("gated")
    with torch.no_grad():
        sae.r_mag.fill_(math.log(2.0))
        sae.b_mag.fill_(0.3)
    x = torch.randn(8, 16)
    pi_gate, pi_mag = sae.gate_and_mag(x)
    torch.testing.assert_close(pi_mag - 0.3, 2 * pi_gate, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        sae.b_gate.fill_(-1e3)  # gate closed everywhere: no latent fires whatever its magnitude
    assert (sae.encode(x) == 0).all()


def test_relu_penalty_is_decoder_norm_weighted_l1():
    sae = make("relu", sparsity_coef=0.5, token_norm=False)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    x = torch.randn(16, 16)
    z = sae.encode(x)
    out = sae.training_loss(x, 0)
    recon = (sae.decode(z) - x).pow(2).sum(-1).mean()
    expected = recon + 0.5 * (z * 3.0).sum(-1).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("decoder", ["sparse", "dense"])
def test_auxk_uses_dead_latents_only(arch, decoder):
    sae = make(arch, k=4, k_aux=8, decoder=decoder)
    x = torch.randn(32, 16)
    assert sae.training_loss(x, 0).parts["aux"].item() == 0  # nobody is dead yet
    sae.tokens_since_fired.fill_(10**9)  # latents 32.. dead, 0..31 alive
    sae.tokens_since_fired[:32] = 0
    pre = sae.pre_acts(x).detach()
    values, j, dead = sae.select_dead(pre)
    assert dead.tolist() == list(range(32, 64))
    # the k_aux largest pre-activations among the dead latents only, token by token
    expected = pre[:, 32:].topk(8, dim=-1).values.relu()
    torch.testing.assert_close(values.sort(dim=-1).values, expected.sort(dim=-1).values)
    # and the aux loss is built from exactly those: e_hat = sum of their decoder rows
    out = sae.training_loss(x, 0)
    z_aux = torch.zeros_like(pre).scatter(1, dead[j], values)
    e_hat = z_aux @ sae.W_dec.detach()
    aux = (e_hat - (x - out.x_hat.detach())).pow(2).sum(-1).mean()
    assert out.parts["aux"].item() == pytest.approx(aux.item(), rel=1e-5)
    out.loss.backward()
    with_aux = sae.W_dec.grad.clone()
    sae.zero_grad()
    sae.cfg = dataclasses.replace(sae.cfg, aux_coef=0.0)
    sae.training_loss(x, 0).loss.backward()
    torch.testing.assert_close(with_aux[:32], sae.W_dec.grad[:32])  # live rows: main path only
    assert not torch.allclose(with_aux[32:], sae.W_dec.grad[32:])  # dead rows: AuxK too


def test_k_schedule_start_middle_end():
    from sae_lab.sae.topk import k_at_step

    assert k_at_step(0, 32, 128, 100, "linear") == 128
    assert k_at_step(50, 32, 128, 100, "linear") == 80
    assert k_at_step(100, 32, 128, 100, "linear") == 32
    assert k_at_step(500, 32, 128, 100, "linear") == 32
    assert k_at_step(0, 32, 128, 100, "cosine") == 128
    assert k_at_step(50, 32, 128, 100, "cosine") == 80
    quarter = round(32 + 96 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert k_at_step(25, 32, 128, 100, "cosine") == quarter
    assert k_at_step(100, 32, 128, 100, "cosine") == 32
    sae = make("topk", k=4, k_start=16, k_schedule_steps=10)
    assert sae.current_k(0) == 16 and sae.current_k(10) == 4
    x = torch.randn(8, 16) + 3
    assert sae.training_loss(x, 0).l0.item() == 16
    assert sae.training_loss(x, 10).l0.item() == 4


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip_is_bit_identical(arch, tmp_path):
    sae = make(arch)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sae.train()
    sae.training_loss(torch.randn(32, 16), 0)  # batchtopk: sets its threshold
    sae.eval()
    sae.metadata["model"] = "gpt2"
    sae.save(tmp_path / "sae")
    loaded = load(tmp_path / "sae").eval()
    assert type(loaded) is type(sae) and loaded.cfg == sae.cfg
    assert loaded.metadata["model"] == "gpt2"
    x = torch.randn(32, 16)
    assert torch.equal(loaded(x), sae(x))
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == [
        "cfg.json", "sae_weights.safetensors"
    ]


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load(tmp_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_input_scale_preserves_function(arch):
    sae = make(arch).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(32, 16)
    s = 2.5
    expected = sae(x * s) / s
    sae.fold_input_scale(s)
    torch.testing.assert_close(sae(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 32}, "sae.k"),
        ({"architecture": "topk", "k": 0}, "sae.k"),
        ({"architecture": "nope"}, "sae.architecture"),
        ({"architecture": "topk", "k_schedule": "step"}, "sae.k_schedule"),
        ({"architecture": "jumprelu", "bandwidth": -1.0}, "sae.bandwidth"),
        ({"architecture": "topk", "dtype": "int8"}, "sae.dtype"),
        ({"architecture": "topk", "k": 8, "k_start": 4}, "sae.k_start"),
        ({"architecture": "topk", "expansion_factor": 0}, "sae.expansion_factor"),
        ({"architecture": "batchtopk", "threshold_momentum": 1.0}, "sae.threshold_momentum"),
    ],
)
def test_sae_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        sae_config(**kw)


def test_field_that_does_not_apply_is_an_error():
    with pytest.raises(ConfigError, match=r"sae\.k=.*does not apply.*relu"):
        ARCHITECTURES["relu"](sae_config("relu", d_in=8, k=4))
    with pytest.raises(ConfigError, match=r"sae\.bandwidth"):
        ARCHITECTURES["topk"](sae_config("topk", d_in=8, bandwidth=0.5))


def test_jumprelu_thresholds_get_their_own_learning_rate():
    sae = make("jumprelu", threshold_lr_scale=7.0)
    groups = sae.param_groups(1e-3)
    by_lr = {g["lr"]: g["params"] for g in groups}
    assert by_lr[7e-3] == [sae.log_threshold]
    capped = {g["lr"]: g["params"] for g in sae.param_groups(1e-2)}  # 7e-2 > threshold_lr_max
    assert capped[0.03] == [sae.log_threshold]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in sae.parameters()
    )
    relu = make("relu")
    assert [g["lr"] for g in relu.param_groups(1e-3)] == [1e-3]


def test_lr_and_sparsity_warmup_schedules():
    from sae_lab.training.schedules import lr_factor, warmup_factor

    assert lr_factor(0, 10, 100, 0.8) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.8) == 1.0
    assert lr_factor(50, 10, 100, 0.8) == 1.0
    assert lr_factor(90, 10, 100, 0.8) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, 0.8) == 0.0
    assert lr_factor(90, 10, 100, 1.0) == 1.0  # no decay
    assert warmup_factor(0, 100) == 0.0
    assert warmup_factor(25, 100) == 0.25
    assert warmup_factor(500, 100) == 1.0
    assert warmup_factor(0, 0) == 1.0


def test_remove_parallel_grads_keeps_row_norms_to_first_order():
    sae = make("topk")
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_grads()
    dot = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    torch.testing.assert_close(dot, torch.zeros(64), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "gated", "jumprelu"])
def test_sae_saved_with_the_old_flat_config_still_loads(arch, tmp_path):
    """Before per-architecture configs, cfg.json held every architecture's fields at their
    defaults (sparsity_coef -1 meaning the architecture's default)."""
    import json

    old_flat = {
        "architecture": arch, "d_in": 16, "expansion_factor": 8, "d_sae": 64,
        "dtype": "float32", "dead_tokens": 1000000, "k": 4 if arch in ("topk", "batchtopk") else 32,
        "k_start": 0, "k_schedule_steps": 0, "k_schedule": "linear", "k_aux": 0,
        "aux_coef": 0.03125, "decoder": "sparse", "threshold_momentum": 0.99,
        "sparsity_coef": -1.0, "bandwidth": 0.1, "threshold_init": 0.5, "threshold_lr_scale": 10.0,
    }
    sae = make(arch, token_norm=False)  # it did not exist: such an SAE was trained without it
    sae.save(tmp_path / "s")
    cfg_path = tmp_path / "s" / "cfg.json"
    saved = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**saved, "sae": old_flat}))
    loaded = load(tmp_path / "s")
    own = sae.cfg.to_dict()
    kept = {k: v for k, v in old_flat.items() if k in own and k != "sparsity_coef"}
    assert type(loaded) is type(sae) and loaded.cfg.to_dict() == {**own, **kept}
    x = torch.randn(8, 16)
    torch.testing.assert_close(loaded.eval()(x), sae.eval()(x))
    if arch == "relu":  # a field set away from its old default is still an error naming it
        cfg_path.write_text(json.dumps({**saved, "sae": {**old_flat, "k": 8}}))
        with pytest.raises(ConfigError, match=r"sae\.k=8 does not apply"):
            load(tmp_path / "s")


@pytest.mark.parametrize("arch", [a for a in ARCHS if ARCHITECTURES[a].config_cls().token_norm])
def test_token_norm_codes_ignore_a_tokens_norm_and_the_reconstruction_keeps_it(arch):
    """With token_norm (the default here) every token is seen at norm sqrt(d_in): scaling a
    token leaves its codes alone and scales its reconstruction; an all-zero token stays finite."""
    sae = make(arch).eval()
    x = torch.randn(32, 16) + 0.5
    c = torch.rand(32, 1) * 10 + 0.1  # a different scale per token
    torch.testing.assert_close(sae.encode(c * x), sae.encode(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sae(c * x), c * sae(x), rtol=1e-4, atol=1e-5)
    plain = make(arch, token_norm=False).eval()
    assert not torch.allclose(plain.encode(c * x), plain.encode(x))  # not true without it
    zero = sae(torch.zeros(1, 16))
    assert torch.isfinite(zero).all() and zero.abs().max() < 1e-4


def test_token_norm_defaults_and_saved_sae_without_the_field_loads_with_it_off(tmp_path):
    import json

    assert {a: ARCHITECTURES[a].config_cls().token_norm for a in ARCHS} == {
        a: a != "topk" for a in ARCHS}
    sae = make("relu")
    sae.save(tmp_path / "old")
    cfg_path = tmp_path / "old" / "cfg.json"
    saved = json.loads(cfg_path.read_text())
    assert saved["sae"].pop("token_norm") is True
    cfg_path.write_text(json.dumps(saved))  # as an SAE saved before the field existed
    assert load(tmp_path / "old").cfg.token_norm is False
