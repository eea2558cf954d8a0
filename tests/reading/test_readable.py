"""Contexts read as text for every tokenizer family: WordPiece (the real MiniLM tokenizer),
byte-level BPE (tests/tiny.py) and SentencePiece with byte fallback (built here), with the
activating token still marked; and the browser shows them that way in headless Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from helpers.browser import chromium_dom

from sae_lab.lm.attach import load_tokenizer
from sae_lab.reading.browser import write_browser
from sae_lab.reading.contexts import TokenText, TopActivations, latent_records


def one_context(tokenizer, text: str, at_token: str, left: int = 30, right: int = 30):
    """latent_records' context for a latent whose top activation is on the first token of
    `text` spelled `at_token` (convert_ids_to_tokens)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    row = tokenizer.convert_ids_to_tokens(ids).index(at_token)
    top = TopActivations(values=torch.tensor([[2.5]]), rows=torch.tensor([[row]]),
                         fires=torch.tensor([1]), token_ids=np.array(ids),
                         doc=np.zeros(len(ids), dtype=np.int64))
    rec = latent_records(top, [0], TokenText(tokenizer), left, right)[0]
    return rec["contexts"][0]


def test_wordpiece_minilm_reads_with_spaces_and_without_hashes():
    tok = load_tokenizer("minilm")
    ctx = one_context(tok, "The beginning and end of each header; parse it.", "##se")
    text = "".join(ctx["tokens"])
    assert text == "the beginning and end of each header ; parse it."
    assert "##" not in text
    assert ctx["tokens"][ctx["at"]] == "se"  # the activating piece, glued to "par"
    assert ctx["tokens"][ctx["at"] - 1] == " par"
    # A window that starts inside a word does not show its "##" either.
    start = one_context(tok, "parse it", "##se", left=0)
    assert start["tokens"] == ["se", " it"] and start["at"] == 0


def test_byte_level_bpe_reads_as_text(tiny_lm):
    tok = load_tokenizer(str(tiny_lm))
    text = "Return the number of items.\nIt is  useful."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    raw = tok.convert_ids_to_tokens(ids)
    assert any(t.startswith("Ġ") for t in raw) and any("Ċ" in t for t in raw)
    pieces = TokenText(tok).pieces(ids)
    assert "".join(pieces) == text and len(pieces) == len(ids)
    assert not any("Ġ" in p or "Ċ" in p for p in pieces)
    at = next(i for i, t in enumerate(raw) if t.startswith("Ġ"))
    ctx = one_context(tok, text, raw[at])
    assert "".join(ctx["tokens"]) == text and ctx["tokens"][ctx["at"]] == pieces[at]


def sentencepiece_tokenizer():
    """A Llama-style tokenizer: BPE over characters with Metaspace ("▁" for spaces) and byte
    fallback (<0xNN> for anything outside the vocabulary), decoded as Llama's is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for c in "▁abcdefghijklmnopqrstuvwxyz.":
        vocab[c] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "w"), ("o", "r"), ("▁w", "or"),
              ("l", "d"), ("▁wor", "ld")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def test_sentencepiece_and_byte_fallback_read_as_text():
    tok = sentencepiece_tokenizer()
    text = "the world café\nthe end"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    raw = tok.convert_ids_to_tokens(ids)
    assert raw[:2] == ["▁the", "▁world"] and "<0xC3>" in raw and "<0x0A>" in raw
    pieces = TokenText(tok).pieces(ids)
    assert "".join(pieces) == text
    assert pieces[:2] == ["the", " world"]
    # The two bytes of "é" show as one character, on the byte that completes it.
    i = raw.index("<0xC3>")
    assert pieces[i : i + 3] == ["", "é", "\n"]
    ctx = one_context(tok, text, "▁world")
    assert "".join(ctx["tokens"]) == text and ctx["tokens"][ctx["at"]] == " world"


@pytest.mark.slow
def test_browser_shows_minilm_contexts_as_text(tmp_path):
    tok = load_tokenizer("minilm")
    ctx = one_context(tok, "The beginning and end of each header; parse it.", "##se")
    records = [{"id": 0, "density": 0.01, "max": 2.5, "contexts": [ctx]}]
    index = write_browser(records, tmp_path / "b", summary="MiniLM contexts")
    dom, console = chromium_dom(index.as_uri())
    assert console == ""
    row = re.search(r'<div class="ctx">(.*?)</div>', dom, re.S).group(1)
    shown = re.sub(r"<[^>]+>", "", row)
    assert shown == "2.500the beginning and end of each header ; parse it."
    assert "##" not in shown
    assert re.search(r'<span class="hot"[^>]*>se</span>', row)
