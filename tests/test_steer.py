"""Steering moves the hook's activation by exactly scale * W_dec[i], and the logits with it."""

from __future__ import annotations

import pytest
import torch
from tiny import make_sae
from transformers import GPT2Config, GPT2LMHeadModel

from sae_lab.analysis.lm import load_lm
from sae_lab.analysis.splice import edit_activation
from sae_lab.analysis.steer import steer, steering_edit
from sae_lab.data.layers import hook_module, output_tensor

LATENT = 3


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
    h1, _ = hook_output(model, 0, hook, ids, steering_edit(sae, LATENT, 4.0, "add"))
    assert torch.allclose(h1 - h0, (4.0 * sae.W_dec[LATENT]).expand_as(h0), atol=1e-5)


def test_clamp_sets_the_latents_contribution(model):
    sae = make_sae()
    ids = torch.randint(0, 200, (2, 10), generator=torch.Generator().manual_seed(1))
    h0, _ = hook_output(model, 1, "resid_post", ids)
    h1, _ = hook_output(model, 1, "resid_post", ids, steering_edit(sae, LATENT, 7.0, "clamp"))
    with torch.no_grad():
        z = sae.encode(h0.flatten(0, 1))[:, LATENT].view(2, 10, 1)
    assert torch.allclose(h1 - h0, (7.0 - z) * sae.W_dec[LATENT], atol=1e-5)


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

    _, small = hook_output(model, 1, "resid_post", ids, steering_edit(sae, LATENT, 0.02))
    assert corr(small - clean).min() > 0.8
    _, large = hook_output(model, 1, "resid_post", ids, steering_edit(sae, LATENT, 50.0))
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
    zero = steer(model, tok, sae, LATENT, 0.0, **args)
    assert zero.steered == zero.unsteered != ""
    # Unsteered is plain greedy decoding.
    enc = tok("KING RICHARD:", return_tensors="pt")
    plain = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert zero.unsteered == tok.decode(plain[0, enc["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
    far = steer(model, tok, sae, LATENT, 60.0, **args)
    assert far.unsteered == zero.unsteered and far.steered != far.unsteered
    sampled = steer(model, tok, sae, LATENT, 60.0, temperature=1.0, seed=3, **args)
    again = steer(model, tok, sae, LATENT, 60.0, temperature=1.0, seed=3, **args)
    assert sampled == again  # same seed, same text


def test_bad_latent_and_width(model):
    sae = make_sae()
    with pytest.raises(ValueError, match="latent 128 does not exist: the SAE has 128 latents"):
        steering_edit(sae, 128, 1.0)
    narrow = make_sae(d_in=32, d_sae=64)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="SAE d_in=32 does not match .* width 64"):
        with edit_activation(model, 0, "resid_post", steering_edit(narrow, 0, 1.0), d_in=32):
            model(ids)
