"""Steering edits move the hook's activation by exactly what each edit kind promises (scale,
add, clamp, every latent, in order, prompt-only, spliced with or without the SAE's error), and
the logits with it; `sae-lab steer` prints both generations side by side."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny import make_sae
from transformers import GPT2Config, GPT2LMHeadModel

from sae_lab.lm.attach import load_lm
from sae_lab.lm.hooks import hook_module, output_tensor
from sae_lab.lm.splice import edit_activation
from sae_lab.reading.edits import Steering, parse_edit
from sae_lab.reading.steer import format_side_by_side, steer

LATENT = 3


def steering(sae, *specs, splice=None, prompt_len=None):
    return Steering(sae, [parse_edit(s) for s in specs], splice, prompt_len)


def codes(sae, h):
    with torch.no_grad():
        return sae.encode(h.flatten(0, 1)).view(*h.shape[:2], -1)  # [B, T, d_sae]


def busiest(sae, h):
    """The latent firing on the most positions of h."""
    return int((codes(sae, h) > 0).sum(dim=(0, 1)).argmax())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=200, n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def hook_output(model, layer, hook, ids, edit=None):
    """The activation at (layer, hook) as the rest of the model sees it."""
    seen = {}
    mod = hook_module(model, layer, hook)
    ctx = edit_activation(model, layer, hook, edit) if edit else None
    if ctx:
        ctx.__enter__()
    # Registered after the edit, so it observes the edited output.
    handle = mod.register_forward_hook(lambda m, a, o: seen.setdefault("h", output_tensor(o)))
    try:
        with torch.no_grad():
            logits = model(ids).logits
    finally:
        handle.remove()
        if ctx:
            ctx.__exit__(None, None, None)
    return seen["h"], logits


@pytest.mark.parametrize("hook", ["resid_post", "mlp_out", "attn_out"])
def test_add_moves_activation_by_exactly_scale_times_decoder_row(model, hook):
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    h0, _ = hook_output(model, 0, hook, ids)
    h1, _ = hook_output(model, 0, hook, ids, steering(sae, f"{LATENT}:+4"))
    assert torch.allclose(h1 - h0, (4.0 * sae.W_dec[LATENT]).expand_as(h0), atol=1e-5)


def test_token_norm_sae_edits_move_the_activation_in_its_own_units(model):
    """With token_norm the codes are those of h scaled to norm sqrt(d): adding N to a latent
    moves h by N * W_dec[i] * ||h|| / sqrt(d), and the splice reconstructs at h's norm."""
    sae = make_sae(arch="relu")
    assert sae.cfg.token_norm
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(0))
    h0, _ = hook_output(model, 0, "resid_post", ids)
    h1, _ = hook_output(model, 0, "resid_post", ids, steering(sae, f"{LATENT}:+4"))
    scale = h0.norm(dim=-1, keepdim=True) / 64**0.5  # [B, T, 1]: differs per position
    assert scale.std() > 0.01 * scale.mean()
    assert torch.allclose(h1 - h0, 4.0 * sae.W_dec[LATENT] * scale, atol=1e-4)
    kept, _ = hook_output(model, 0, "resid_post", ids, steering(sae, splice="keep-error"))
    assert torch.allclose(kept, h0, atol=1e-4)  # no edits, error kept: h itself
    dropped, _ = hook_output(model, 0, "resid_post", ids, steering(sae, splice="drop-error"))
    with torch.no_grad():
        assert torch.allclose(dropped, sae(h0.flatten(0, 1)).view_as(h0), atol=1e-4)


def test_clamp_sets_the_latents_contribution(model):
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(1))
    h0, _ = hook_output(model, 1, "resid_post", ids)
    i = busiest(sae, h0)  # it fires on some tokens and not others: clamping is not adding
    h1, _ = hook_output(model, 1, "resid_post", ids, steering(sae, f"{i}:=7"))
    z = codes(sae, h0)[..., i : i + 1]
    assert (z > 0).any() and (z == 0).any()
    assert torch.allclose(h1 - h0, (7.0 - z) * sae.W_dec[i], atol=1e-5)


def test_scale_multiplies_the_latents_contribution(model):
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(1))
    h0, _ = hook_output(model, 1, "resid_post", ids)
    i = busiest(sae, h0)
    h1, _ = hook_output(model, 1, "resid_post", ids, steering(sae, f"{i}:x30"))
    z = codes(sae, h0)[..., i : i + 1]
    assert torch.allclose(h1 - h0, 29.0 * z * sae.W_dec[i], atol=1e-4)
    assert (h1 - h0).abs().max() > 0.1


def test_several_edits_apply_in_order(model):
    """"Halve every latent, then add one": all:x0.5 then 5:+4; and an add undone by a scale."""
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(4))
    h0, _ = hook_output(model, 1, "resid_post", ids)
    z = codes(sae, h0)
    h1, _ = hook_output(model, 1, "resid_post", ids, steering(sae, "all:x0.5", "5:+4"))
    want = -0.5 * z @ sae.W_dec + 4.0 * sae.W_dec[5]
    assert torch.allclose(h1 - h0, want, atol=1e-4)
    h2, _ = hook_output(model, 1, "resid_post", ids, steering(sae, "2:+4", "2:x0", "7:=1.5"))
    want = -z[..., 2:3] * sae.W_dec[2] + (1.5 - z[..., 7:8]) * sae.W_dec[7]
    assert torch.allclose(h2 - h0, want, atol=1e-4)


def test_splice_keeps_or_drops_the_error_term(model):
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(5))
    h0, _ = hook_output(model, 1, "resid_post", ids)
    z = codes(sae, h0)
    z_new = 0.5 * z
    z_new[..., 5] += 4.0
    with torch.no_grad():
        recon = sae.decode(z_new.flatten(0, 1)).view_as(h0)
        error = h0 - sae(h0.flatten(0, 1)).view_as(h0)
    assert error.norm() > 0.1 * h0.norm()  # an imperfect SAE, so dropping the error shows
    edits = ("all:x0.5", "5:+4")
    dropped, _ = hook_output(model, 1, "resid_post", ids,
                             steering(sae, *edits, splice="drop-error"))
    assert torch.allclose(dropped, recon, atol=1e-4)
    kept, _ = hook_output(model, 1, "resid_post", ids, steering(sae, *edits, splice="keep-error"))
    assert torch.allclose(kept, recon + error, atol=1e-4)
    # No edits, error dropped: the model runs on the plain reconstruction (downstream-loss splice).
    plain, _ = hook_output(model, 1, "resid_post", ids, steering(sae, splice="drop-error"))
    assert torch.allclose(plain, h0 - error, atol=1e-4)


@pytest.mark.parametrize("splice", [None, "drop-error"])
def test_prompt_only_edits_the_first_positions(model, splice):
    """Positions < prompt_len change, later ones do not, also across calls (KV-cache steps)."""
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(6))
    h0, _ = hook_output(model, 1, "resid_post", ids)
    every = steering(sae, f"{LATENT}:+4", "all:x0.5", splice=splice)
    h_all, _ = hook_output(model, 1, "resid_post", ids, every)
    first = steering(sae, f"{LATENT}:+4", "all:x0.5", splice=splice, prompt_len=6)
    h1, _ = hook_output(model, 1, "resid_post", ids, first)
    assert torch.allclose(h1[:, :6], h_all[:, :6], atol=1e-5)
    assert torch.equal(h1[:, 6:], h0[:, 6:]) and not torch.allclose(h1[:, :6], h0[:, :6])
    # Positions continue from the last call: a later one-token step is past the prompt.
    act = torch.randn(2, 1, 64)
    assert torch.equal(first(act), act)
    first.reset()
    assert not torch.equal(first(torch.randn(2, 3, 64)), act)


def test_steering_moves_logits_along_the_decoder_direction(model):
    """Hook at the last block: logits = LN_f(h) W_U^T (LN_f has unit gain at init), so pushing
    along d = W_dec[i] moves the logits along (d - mean d) W_U^T, what the decoder row predicts.
    A small push changes them in that direction; a huge one makes them that direction."""
    sae = make_sae()
    ids = torch.randint(0, 200, (3, 12), generator=torch.Generator().manual_seed(2))
    _, clean = hook_output(model, 1, "resid_post", ids)
    d = sae.W_dec[LATENT].detach()
    predicted = (d - d.mean()) @ model.lm_head.weight.T  # [V]

    def corr(rows):  # Pearson correlation of each row of [N, V] with `predicted`
        return torch.corrcoef(torch.cat([predicted[None], rows.flatten(0, 1)]))[0, 1:]

    _, small = hook_output(model, 1, "resid_post", ids, steering(sae, f"{LATENT}:+0.02"))
    assert corr(small - clean).min() > 0.8
    _, large = hook_output(model, 1, "resid_post", ids, steering(sae, f"{LATENT}:+50"))
    assert corr(large).min() > 0.999 and corr(clean).abs().max() < 0.6
    # The token the decoder row promotes most gains more than the average token everywhere.
    top = predicted.argmax()
    delta = (small - clean).flatten(0, 1)
    assert (delta[:, top] > delta.mean(dim=1)).all()


@pytest.mark.slow
def test_generation_side_by_side(tiny_lm):
    model, tok = load_lm(str(tiny_lm))
    sae = make_sae()
    args = dict(prompt="KING RICHARD:", layer=1, hook="resid_post", max_new_tokens=12)
    zero = steer(model, tok, steering(sae, f"{LATENT}:+0"), **args)
    assert zero.steered == zero.unsteered != ""
    # Unsteered is plain greedy decoding.
    enc = tok("KING RICHARD:", return_tensors="pt")
    plain = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert zero.unsteered == tok.decode(plain[0, enc["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
    far = steer(model, tok, steering(sae, f"{LATENT}:+60", "7:x30"), **args)
    assert far.unsteered == zero.unsteered and far.steered != far.unsteered
    # Prompt-only (prompt_len=0: set to the prompt's length) steers less than every position.
    only = steering(sae, f"{LATENT}:+60", "7:x30", prompt_len=0)
    first = steer(model, tok, only, **args)
    assert only.prompt_len == enc["input_ids"].shape[1]
    assert first.steered not in (far.steered, far.unsteered)
    sampled = steer(model, tok, steering(sae, f"{LATENT}:+60"), temperature=1.0, seed=3, **args)
    again = steer(model, tok, steering(sae, f"{LATENT}:+60"), temperature=1.0, seed=3, **args)
    assert sampled == again  # same seed, same text
    table = format_side_by_side(far, steering(sae, f"{LATENT}:+60", "7:x30"), width=80)
    head, rule, *rows = table.split("\n")[2:]
    assert head.startswith("unsteered") and f"| steered ({LATENT}:+60, 7:x30; every" in head
    assert rows[0].startswith("KING RICHARD:") and " | KING RICHARD:" in rows[0]
    assert all(len(r) <= 80 for r in rows)


def test_bad_edits_latent_and_width(model):
    sae = make_sae()
    with pytest.raises(ValueError, match="latent 128 does not exist: the SAE has 128 latents"):
        steering(sae, "3:+1", "128:x2")
    for bad in ("3", "3:y2", "x:+1", "3:+abc", "3:+inf", "-1:+2"):
        with pytest.raises(ValueError, match=r"^cannot read edit .*LATENT:xN \(scale\)"):
            parse_edit(bad)
    assert [str(parse_edit(s)) for s in ("12:x30", "4:+4", "4:-2.5", "9:=0", "all:*0.5")] == [
        "12:x30", "4:+4", "4:+-2.5", "9:=0", "all:x0.5"]
    narrow = make_sae(d_in=32, d_sae=64)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="SAE d_in=32 does not match .* width 64"):
        with edit_activation(model, 0, "resid_post", steering(narrow, "0:+1"), d_in=32):
            model(ids)
