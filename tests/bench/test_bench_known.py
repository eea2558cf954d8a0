"""The bench's metrics on hand-built SAEs whose scores are known: core's FVU, L0, dead and dense
latents; a latent equal to the label direction scores probe accuracy 1 at k = 1; a first-letter
latent split by a known share gives that absorption rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sae_lab.bench.absorption import AbsorptionParams, absorption, fit_letter_probe, word_letters
from sae_lab.bench.core import reconstruction
from sae_lab.bench.probing import binary_tasks, pool_latents, pool_raw, probe_accuracies
from sae_lab.bench.textsets import load_text_set
from sae_lab.sae import ARCHITECTURES, sae_config


def relu_sae(W_enc: torch.Tensor, W_dec: torch.Tensor, b_enc: torch.Tensor | None = None):
    d_in, d_sae = W_enc.shape
    sae = ARCHITECTURES["relu"](sae_config("relu", d_in=d_in, d_sae=d_sae, token_norm=False))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.copy_(torch.zeros(d_sae) if b_enc is None else b_enc)
        sae.b_dec.zero_()
    return sae.eval()


def test_core_fvu_l0_dead_dense_known():
    # Latents 0, 1, 2 copy the positive part of dims 0, 1, 2; latents 3-5 never fire.
    n = 40
    x = torch.zeros(n, 4)
    x[:, 0] = torch.arange(1, n + 1).float()
    x[0::2, 1] = 2.0                      # latent 1 fires on half the rows
    x[:, 2] = torch.tensor([1.0, -1.0]).repeat(n // 2)  # latent 2 on the other half... of signs
    x[:5, 3] = 0.5                        # dim 3 is never reconstructed
    W_enc = torch.zeros(4, 6)
    W_dec = torch.zeros(6, 4)
    for i in range(3):
        W_enc[i, i] = W_dec[i, i] = 1.0
    sae = relu_sae(W_enc, W_dec)
    m, density = reconstruction(sae, x.split(16), dense_above=0.1)
    x_hat = x.clone()
    x_hat[:, 2] = x[:, 2].clamp_min(0)
    x_hat[:, 3] = 0
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert m["fvu"] == pytest.approx(float(fvu), rel=1e-6)
    assert m["l0"] == pytest.approx(1 + 0.5 + 0.5)
    assert m["unfired_frac"] == pytest.approx(3 / 6)
    assert m["dense_frac"] == pytest.approx(3 / 6)  # latents 0-2 fire on >= 50% of rows
    assert density.tolist() == pytest.approx([1.0, 0.5, 0.5, 0, 0, 0])
    assert m["rows"] == n


def test_latent_on_the_label_direction_probes_perfectly_at_k1():
    g = torch.Generator().manual_seed(0)
    d, n = 16, 80
    u = torch.ones(d) / d**0.5 * torch.tensor([1.0, -1.0]).repeat(d // 2)  # spread over dims
    labels = ["neg", "pos"] * (n // 2)
    y = torch.tensor([lab == "pos" for lab in labels]).float()
    # each "text" is 3 tokens at its row, the label carried along u
    rows = torch.randn(n, d, generator=g) + 8.0 * y[:, None] * u
    acts = [r + 0.05 * torch.randn(3, d, generator=g) for r in rows]
    W_enc = torch.randn(d, 8, generator=g) * 0.3
    W_enc[:, 0] = u
    sae = relu_sae(W_enc, W_enc.T.clone())
    tasks = binary_tasks(labels, seed=0)
    assert [t.name for t in tasks] == ["pos"]
    sae_acc = probe_accuracies(pool_latents(sae, acts), tasks, "sae", (1, 2, 5, 20))
    raw_acc = probe_accuracies(pool_raw(acts), tasks, "llm", (1, 2, 5, 20), dense=True)
    assert sae_acc["sae_top1"] == 1.0
    assert "sae_top20" not in sae_acc  # k must be below the number of latents
    # one raw dimension holds a quarter of the signal: a 1-sparse probe on it errs
    assert raw_acc["llm_top1"] < 0.95 and raw_acc["llm_all"] > 0.95
    # three classes: one task per class, each balanced against the rest
    three = binary_tasks(["a", "b", "c"] * 20, seed=0)
    assert [t.name for t in three] == ["a", "b", "c"]
    assert all(t.y_train.mean() == pytest.approx(0.5, abs=0.1) for t in three)


def test_labelled_sets_read_and_refuse_one_class(tmp_path):
    f = tmp_path / "one.jsonl"
    f.write_text("".join(json.dumps({"text": f"t{i}", "label": "x"}) + "\n" for i in range(6)))
    with pytest.raises(ValueError, match=r"one.jsonl has one class \('x'\); sparse probing "
                       "needs two or more"):
        load_text_set(str(f))
    # A datasets folder (what a Hub dataset id names) goes through datasets.load_dataset.
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(
        json.dumps({"text": f"text {i}", "label": i % 3}) + "\n" for i in range(30)))
    ts = load_text_set(str(folder), per_class=4)
    assert ts.classes == ["0", "1", "2"] and len(ts.texts) == 12
    topics = load_text_set("stdlib_topics", per_class=5)
    assert topics.classes == ["asyncio", "email", "logging", "xml"] and len(topics.texts) == 20


class _Tok:
    """A tokenizer with GPT-2's word-start marker."""

    vocab = {"Ġapple": 0, "le": 1, "Ġbox": 2, "Ġ7x": 3, "<|endoftext|>": 4, "Ġa": 5}
    all_special_tokens = ["<|endoftext|>"]

    def get_vocab(self):
        return self.vocab

    def convert_ids_to_tokens(self, ids):
        inv = {v: k for k, v in self.vocab.items()}
        return [inv[i] for i in ids]


def test_word_letters():
    got = word_letters(np.array([0, 1, 2, 3, 4, 5, 0]), _Tok())
    assert got.tolist() == ["a", "", "b", "", "", "a", "a"]


def letter_data(absorbed: int, types_a: int = 40, per_type: int = 4):
    """Rows x = p_letter + e_token for letters a-d (a: `types_a` token types, b-d: 5 each),
    each token type's rows alternating between the probe's train and test halves."""
    letters = {"a": types_a, "b": 5, "c": 5, "d": 5}
    n_types = sum(letters.values())
    d = 4 + n_types
    rows, labels, types = [], [], []
    t = 0
    for li, (c, n) in enumerate(letters.items()):
        for _ in range(n):
            v = torch.zeros(d)
            v[li] = 1.0
            v[4 + t] = 1.0
            rows += [v] * per_type
            labels += [c] * per_type
            types += [t] * per_type
            t += 1
    x = torch.stack(rows)
    # The SAE: latent i < 4 is letter i, silent on the absorbed a-tokens (the first `absorbed`
    # types of a); latent 4 + j fires on absorbed type j alone and carries p_a + e_j.
    W_enc = torch.zeros(d, 4 + absorbed)
    W_dec = torch.zeros(4 + absorbed, d)
    for li in range(4):
        W_enc[li, li] = 1.0
        W_dec[li, li] = 2.0
    for j in range(absorbed):
        W_enc[4 + j, 0] = -2.0
        W_enc[4 + j, 4 + j] = 1.0
        W_dec[4 + j, 0] = W_dec[4 + j, 4 + j] = 2.0
    sae = relu_sae(W_enc, W_dec, b_enc=torch.full((4 + absorbed,), -0.5))
    return x, np.array(labels, dtype=object), sae


@pytest.mark.parametrize("absorbed", [0, 10])
def test_absorption_of_a_split_first_letter_feature(absorbed):
    x, labels, sae = letter_data(absorbed)
    params = AbsorptionParams(min_tokens=5)
    probe = fit_letter_probe(x.numpy(), labels, params)
    assert probe.letters == ["a", "b", "c", "d"]
    metrics, per = absorption(sae, x, probe, params)
    share = absorbed / 40  # of the a-tokens, those whose letter latent 0 leaves to another
    assert per["a"]["main_latents"] == [0]  # the absorbers each add < f1_jump to the probe
    assert per["a"]["true_positives"] == 80
    assert per["a"]["full_absorption_rate"] == pytest.approx(share)
    assert per["a"]["absorption_fraction"] == pytest.approx(share)
    for c, latent in (("b", 1), ("c", 2), ("d", 3)):
        assert per[c]["main_latents"] == [latent]
        assert per[c]["full_absorption_rate"] == 0 and per[c]["absorption_fraction"] == 0
    assert metrics["absorption_full"] == pytest.approx(share / 4)
    assert metrics["absorption_fraction"] == pytest.approx(share / 4)
    assert metrics["absorption_split_latents"] == 1.0
