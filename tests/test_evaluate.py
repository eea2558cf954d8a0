"""Held-out metrics against hand-computed values; downstream loss on a tiny random GPT-2."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers.tiny import identity_sae
from transformers import GPT2Config, GPT2LMHeadModel

from sae_lab.evaluate import (
    downstream_loss,
    evaluate_sae,
    format_table,
    sae_reconstruct,
    save_report,
)
from sae_lab.sae import ARCHITECTURES, sae_config
from sae_lab.training.metrics import fvu

X = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [3.0, -2.0], [1.0, 0.0]])


def relu_of_x_sae(dec_scale: float = 1.0):
    """x_hat = dec_scale * ReLU(x) with latents 0, 1; latents 2, 3 never fire."""
    sae = ARCHITECTURES["relu"](sae_config("relu", d_in=2, d_sae=4, token_norm=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0, -1, -1]))
        sae.W_dec.copy_(dec_scale * torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
        sae.b_dec.zero_()
    return sae


def test_metrics_match_hand_computed_values():
    # x_hat = ReLU(x) = [[1,2],[0,0],[3,0],[1,0]]; errors: row 2 (-1,0), row 3 (0,-2).
    # mean(x) = (1, 0); sum ||x - mean||^2 = 4 + 4 + 8 + 0 = 16; sum ||x - x_hat||^2 = 5.
    res = evaluate_sae(relu_of_x_sae(), [X[:1], X[1:]])  # two batches: sums must stream exactly
    m = res.metrics
    assert m["fvu"] == pytest.approx(5 / 16)
    assert m["mse"] == pytest.approx(5 / 8)
    assert m["cos"] == pytest.approx((2 + 3 / math.sqrt(13)) / 4)
    assert m["l0"] == pytest.approx(1.0)  # 2 + 0 + 1 + 1 active latents over 4 tokens
    assert m["l1"] == pytest.approx(7 / 4)
    assert m["l2_ratio"] == pytest.approx((1 + 0 + 3 / math.sqrt(13) + 1) / 4)
    assert m["rel_bias"] == pytest.approx(1.0)  # x . ReLU(x) = ||ReLU(x)||^2: no shrinkage
    assert m["unfired_frac"] == 0.5 and m["fired_frac"] == 0.5
    assert m["tokens"] == 4
    assert res.density.tolist() == [0.75, 0.25, 0.0, 0.0]


def test_relative_reconstruction_bias_sees_halved_decoder():
    m = evaluate_sae(relu_of_x_sae(dec_scale=0.5), [X]).metrics
    # gamma = sum ||x_hat||^2 / sum <x, x_hat> = (0.25 * 15) / (0.5 * 15)
    assert m["rel_bias"] == pytest.approx(0.5)
    assert m["l2_ratio"] == pytest.approx((0.5 + 0 + 1.5 / math.sqrt(13) + 0.5) / 4)


def test_streaming_fvu_equals_batch_fvu_of_the_whole_set():
    torch.manual_seed(0)
    sae = ARCHITECTURES["topk"](sae_config("topk", d_in=8, d_sae=32, k=3))
    x = torch.randn(103, 8) * 3 + 5  # a large mean: FVU must be about the mean, not zero
    parts = list(x.split([1, 50, 7, 45]))
    m = evaluate_sae(sae, parts).metrics
    with torch.no_grad():
        whole = fvu(x, sae(x)).item()
    assert m["fvu"] == pytest.approx(whole, rel=1e-9)
    batch_mean = sum(fvu(p, sae(p)).item() for p in parts[1:]) / 3
    assert abs(batch_mean - whole) > 1e-3  # averaging per-batch FVUs would be a different number


def test_report_files(tmp_path):
    res = evaluate_sae(relu_of_x_sae(), [X])
    save_report(tmp_path / "ev", {**res.metrics, "sae": "x"}, res.density)
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert saved["fvu"] == pytest.approx(5 / 16) and saved["sae"] == "x"
    png = (tmp_path / "ev" / "feature_density.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert (tmp_path / "ev" / "feature_density.safetensors").is_file()
    table = format_table(res.metrics)
    assert "fvu" in table and "0.3125" in table


def test_width_mismatch_is_an_error():
    with pytest.raises(ValueError, match="d_in=2"):
        evaluate_sae(relu_of_x_sae(), [torch.zeros(3, 5)])


# --- downstream loss ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97, n_positions=64,
                     initializer_range=0.3, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def test_downstream_identity_scores_one_zeros_score_zero(tiny_gpt2):
    ids = torch.randint(0, 97, (6, 24), generator=torch.Generator().manual_seed(1))
    batches = list(ids.split(4))
    ident = downstream_loss(tiny_gpt2, batches, 0, "resid_post",
                            sae_reconstruct(identity_sae(64)), d_in=64)
    # A random model is worse than uniform, so ablating helps it; what matters is that it changes.
    assert abs(ident["ce_zero"] - ident["ce_clean"]) > 0.01
    assert ident["ce_score"] == pytest.approx(1.0, abs=1e-5)
    assert ident["delta_ce"] == pytest.approx(0.0, abs=1e-5)
    assert ident["kl_sae"] == pytest.approx(0.0, abs=1e-6)
    assert ident["kl_score"] == pytest.approx(1.0, abs=1e-5)
    zero_sae = identity_sae(64)
    with torch.no_grad():
        zero_sae.W_dec.zero_()
    zero = downstream_loss(tiny_gpt2, batches, 0, "resid_post", sae_reconstruct(zero_sae))
    assert zero["ce_score"] == pytest.approx(0.0, abs=1e-5)
    assert zero["kl_score"] == pytest.approx(0.0, abs=1e-5)
    assert zero["ce_clean"] == pytest.approx(ident["ce_clean"])
    # CE is the mean next-token NLL of the clean model over all 6 * 23 predictions.
    with torch.no_grad():
        logits = tiny_gpt2(ids).logits
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert ident["ce_clean"] == pytest.approx(ce.item(), rel=1e-5)


def test_downstream_half_reconstruction_in_between(tiny_gpt2):
    ids = torch.randint(0, 97, (4, 16), generator=torch.Generator().manual_seed(2))
    half = downstream_loss(tiny_gpt2, [ids], 0, "resid_post", lambda a: 0.5 * a)
    assert half["kl_sae"] > 0 and half["kl_zero"] > half["kl_sae"]


def test_downstream_d_in_mismatch(tiny_gpt2):
    ids = torch.randint(0, 97, (1, 8))
    with pytest.raises(ValueError, match=r"d_in=32 does not match .* layer 1 resid_post width 64"):
        downstream_loss(tiny_gpt2, [ids], 1, "resid_post", sae_reconstruct(identity_sae(32)), 32)


def test_held_out_table_names_its_measure_apart_from_training_dead():
    """Training's dead_frac (none of the last sae.dead_tokens training tokens) and the held-out
    "never fired" share are different numbers: they never share a name or a column."""
    from sae_lab.evaluate import unfired_note
    from sae_lab.pipeline import heldout_table

    sae = relu_of_x_sae()
    m = evaluate_sae(sae, [X]).metrics
    assert "dead_frac" not in m and m["unfired_frac"] == 0.5
    head, _, row, legend = heldout_table({"relu": m}).splitlines()
    assert head.split() == ["best", "of", "L0", "FVU", "cos", "unfired", "tokens"]
    assert row.split()[4] == "50.0%"
    assert legend.startswith("unfired: latents that fired on no held-out token")
    assert unfired_note(sae).startswith("unfired_frac: share of latents that fired on no token")
    assert sae.dead_meaning in unfired_note(sae)
