"""Top-activating contexts, promoted tokens, and the HTML feature browser in headless Chromium.

The tiny language model and shards (tests/tiny.py): a byte-level BPE tokenizer trained on a slice
of the generated test corpus and a 2-layer random GPT-2.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import numpy as np
import pytest
import torch
from helpers.browser import chromium_dom
from helpers.tiny import make_sae  # noqa: E402

from sae_lab.lm.attach import load_lm, promoted_tokens, unembedding_for
from sae_lab.reading.browser import write_browser
from sae_lab.reading.contexts import (
    TokenText,
    context_window,
    latent_records,
    parse_latents,
    top_activations,
)
from sae_lab.sae import ARCHITECTURES, sae_config

# --- top-activating contexts -------------------------------------------------------------------


def fake_blocks(acts: torch.Tensor, docs: list[int], block: int = 7):
    ids = torch.arange(len(acts), dtype=torch.int32) + 100
    doc = torch.tensor(docs, dtype=torch.int64)
    for s in range(0, len(acts), block):
        yield {"acts": acts[s : s + block], "token_ids": ids[s : s + block],
               "doc": doc[s : s + block], "pos": torch.zeros(len(acts[s : s + block])),
               "shard": "fake"}


def identity_relu_sae(d: int):
    sae = ARCHITECTURES["relu"](sae_config("relu", d_in=d, d_sae=d, token_norm=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae  # z = ReLU(x): latent j is coordinate j


def test_top_activations_known_answer():
    torch.manual_seed(0)
    x = torch.randn(40, 3)
    x[:, 2] = -1.0  # latent 2 never fires
    x[5, 2] = 0.5  # ... except on row 5
    docs = [r // 10 for r in range(40)]
    top = top_activations(identity_relu_sae(3), fake_blocks(x, docs), n=4, batch_size=3)
    for j in range(2):
        want_v, want_r = x[:, j].topk(4)
        assert torch.allclose(top.values[j], want_v.clamp_min(0))
        assert top.rows[j].tolist() == want_r.tolist()
    assert top.values[2].tolist() == [0.5, 0, 0, 0] and top.rows[2].tolist() == [5, -1, -1, -1]
    assert top.fires.tolist() == [(x[:, 0] > 0).sum(), (x[:, 1] > 0).sum(), 1]
    assert top.density[2].item() == pytest.approx(1 / 40)
    # Context: stays inside document 0 (rows 0..9), activating row 5 at index 3 of rows 2..9.
    ids, at = context_window(top, 5, left=3, right=10)
    assert ids == list(range(102, 110)) and at == 3
    ids, at = context_window(top, 10, left=3, right=1)  # first row of document 1
    assert ids == [110, 111] and at == 0


def test_max_tokens_and_latent_specs():
    x = torch.rand(30, 2)
    top = top_activations(identity_relu_sae(2), fake_blocks(x, [0] * 30), n=2, max_tokens=12)
    assert top.n_rows == 12 and int(top.rows.max()) < 12
    assert parse_latents("0-2,7", 10) == [0, 1, 2, 7]
    assert parse_latents(None, 5000, default_max=100) == list(range(100))
    with pytest.raises(ValueError, match="latent 12 does not exist: the SAE has 10 latents"):
        parse_latents("3,12", 10)


def test_promoted_tokens_are_the_argmax_of_W_dec_W_U():
    torch.manual_seed(0)
    W_dec, W_U = torch.randn(5, 8), torch.randn(30, 8)
    vals, idx = promoted_tokens(W_dec, W_U, k=3, chunk=2)
    full = W_dec @ W_U.T
    assert torch.equal(idx, full.topk(3, dim=-1).indices)
    assert torch.allclose(vals, full.topk(3, dim=-1).values)


def test_model_without_unembedding_is_a_one_line_error():
    from transformers import GPT2Config, GPT2Model

    body = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))  # no LM head
    with pytest.raises(ValueError, match=r"^model tiny-body has no unembedding .*$"):
        unembedding_for(body, 32, "tiny-body")


# --- the browser, end to end -------------------------------------------------------------------


@pytest.mark.slow
def test_feature_browser_in_chromium(tiny_lm, tiny_shards, tmp_path):
    from sae_lab.data.shards import iter_blocks

    model, tokenizer = load_lm(str(tiny_lm))
    sae = make_sae()
    top = top_activations(sae, iter_blocks(tiny_shards), n=5)
    assert top.n_rows > 2000
    promoted = promoted_tokens(sae.W_dec, unembedding_for(model, 64, "tiny"), k=5)
    latents = parse_latents("0-19", sae.d_sae)
    records = latent_records(top, latents, TokenText(tokenizer), left=8, right=3,
                             promoted=promoted)
    # Each context's highlighted token is the token of the row that activated.
    rec = next(r for r in records if r["contexts"])
    row = int(top.rows[rec["id"], 0])
    ctx = rec["contexts"][0]
    assert ctx["tokens"][ctx["at"]] == tokenizer.decode([int(top.token_ids[row])])
    assert ctx["value"] == pytest.approx(float(top.values[rec["id"], 0]), abs=1e-3)
    # A token text that would break out of a <script> element must stay inert.
    records[0]["contexts"].insert(0, {"tokens": ["</script><b>x", "y"], "at": 0, "value": 9.0})
    index = write_browser(records, tmp_path / "browser", summary="tiny test SAE")

    dom, console = chromium_dom(index.as_uri())
    assert console == ""
    assert 'data-ready="1"' in dom and "data-errors" not in dom
    assert len(re.findall(r'<button [^>]*data-latent="\d+"', dom)) == 20
    assert "20 of 20 latents" in dom
    assert 'id="panel" data-latent="0"' in dom
    assert "&lt;/script&gt;&lt;b&gt;x" in dom  # rendered as text, not markup

    target = next(r for r in records[5:] if r["contexts"])
    # One page load: search by index (#q=7) and select another latent's panel (#latent=...).
    dom, console = chromium_dom(index.as_uri() + f"#q=7&latent={target['id']}")
    assert console == "" and f'id="panel" data-latent="{target["id"]}"' in dom
    assert f"Latent {target['id']}" in dom and 'class="hot"' in dom
    word = target["promoted"][0][0]
    assert word.replace("<", "&lt;").replace(">", "&gt;") in dom
    assert re.findall(r'<button [^>]*data-latent="(\d+)"', dom) == ["7"]
    # Search by text: exactly the latents whose contexts or promoted tokens contain it.
    ctx = target["contexts"][0]
    needle = "".join(ctx["tokens"][max(0, ctx["at"] - 1) : ctx["at"] + 2]).strip()
    assert len(needle) >= 3
    dom, _ = chromium_dom(index.as_uri() + "#q=" + quote(needle))
    shown = {int(i) for i in re.findall(r'<button [^>]*data-latent="(\d+)"', dom)}
    hay = ["\n".join(["".join(c["tokens"]) for c in r["contexts"]]
                     + [" ".join(p[0] for p in r["promoted"])]).lower() for r in records]
    want = {r["id"] for r, h in zip(records, hay, strict=True) if needle.lower() in h}
    assert shown == want and target["id"] in shown and len(want) < 20
    payload = re.search(r'<script id="data" type="application/json">(.*?)</script>', dom, re.S)
    assert json.loads(payload.group(1))["latents"][3]["id"] == 3


def test_density_matches_eval(tiny_shards):
    from sae_lab.data.shards import iter_blocks
    from sae_lab.evaluate import evaluate_sae

    sae = make_sae(arch="jumprelu")
    top = top_activations(sae, iter_blocks(tiny_shards), n=2)
    res = evaluate_sae(sae, (b["acts"] for b in iter_blocks(tiny_shards)))
    assert np.allclose(top.density.numpy(), res.density.numpy())
    assert res.metrics["tokens"] == top.n_rows
