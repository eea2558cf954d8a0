"""`sae-lab features`: the top latents of each token and of a whole text, checked against the
SAE applied by hand to the model's hidden states; the CLI on MiniLM and the tiny GPT-2, with
one-line errors (unknown latent, a model without an LM head for `steer`)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.cli import run_cli
from helpers.tiny import make_sae

from sae_lab.lm.attach import load_lm
from sae_lab.reading.features import features_json, format_features, text_features

TEXT = "The beginning and end of each header; parse it."


def test_top_latents_match_the_sae_on_the_hidden_states(tiny_lm):
    model, tok = load_lm(str(tiny_lm))
    sae = make_sae()
    texts = ["Return the number of items.", "KING RICHARD: a horse"]
    found = text_features(model, tok, sae, texts, layer=0, hook="resid_post", top=3, top_text=4)
    for text, f in zip(texts, found, strict=True):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[1][0]  # block 0's output
            z = sae.encode(h)  # [T, d_sae]
        assert "".join(f.tokens) == text and len(f.tokens) == len(z)
        for row, got in zip(z, f.per_token, strict=True):
            v, i = row.topk(3)
            assert [j for j, _ in got] == i.tolist()
            assert [x for _, x in got] == pytest.approx(v.tolist(), abs=1e-3)
        best, at = z.max(dim=0)
        v, i = best.topk(4)
        assert [h.latent for h in f.overall] == i.tolist()
        assert [h.max for h in f.overall] == pytest.approx(v.tolist(), abs=1e-3)
        assert [h.at for h in f.overall] == at[i].tolist()
        assert [h.fires for h in f.overall] == (z[:, i] > 0).sum(dim=0).tolist()
    # Only some latents, with titles.
    few = text_features(model, tok, sae, texts[:1], 0, "resid_post", top=2, top_text=50,
                        latents=[5, 6, 7], titles={6: "a six"})[0]
    assert {h.latent for h in few.overall} <= {5, 6, 7}
    assert all(j in (5, 6, 7) for lat in few.per_token for j, _ in lat)
    assert all(h.title == ("a six" if h.latent == 6 else None) for h in few.overall)
    data = features_json(found)
    assert data[0]["tokens"][0]["token"] == found[0].tokens[0]
    assert data[1]["top"][0]["latent"] == found[1].overall[0].latent
    table = format_features(found)
    assert table.startswith("text 1: 'Return the number of items.' (")
    assert found[0].truncated == 0
    # A text longer than the model's context (128 positions) is cut, and says so.
    long = text_features(model, tok, sae, ["word " * 400], 0, "resid_post")[0]
    assert len(long.tokens) == 128 and long.truncated == len(tok("word " * 400).input_ids) - 128
    assert f"(128 tokens, the last {long.truncated} cut off" in format_features([long])


@pytest.fixture(scope="module")
def minilm_sae(tmp_path_factory):
    path = tmp_path_factory.mktemp("minilm-sae")
    sae = make_sae(d_in=384, d_sae=64, arch="relu")
    sae.metadata.update(model="sentence-transformers/all-MiniLM-L6-v2", layer=3,
                        hook="resid_post")
    sae.save(path)
    return path


def test_features_cli_on_minilm(minilm_sae, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat.\n\nA header line\n")
    code, out, err = run_cli(["features", str(minilm_sae), "--prompt", TEXT, "--file",
                              str(prompts), "--json", "--top", "2"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert [d["text"] for d in data] == [TEXT, "The cat sat.", "A header line"]
    tokens = [t["token"] for t in data[0]["tokens"]]
    # WordPiece pieces read as the text; [CLS] and [SEP] are not reported.
    assert "".join(tokens) == "the beginning and end of each header ; parse it."
    assert tokens[0] == "the" and tokens[-1] == "."
    assert all(len(t["latents"]) <= 2 for t in data[0]["tokens"])
    # Titles from explanations.json (written by `sae-lab explain`) appear in the table.
    top = data[0]["top"][0]["latent"]
    (minilm_sae / "explanations.json").write_text(json.dumps(
        {str(top): {"title": "header words", "explanation": "...", "score": 0.9}}))
    try:
        code, out, err = run_cli(["features", str(minilm_sae), "--prompt", TEXT], capsys)
    finally:
        (minilm_sae / "explanations.json").unlink()
    assert code == 0, err
    assert "top latents over the text:" in out
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == [str(top)])
    assert line.endswith("header words")


@pytest.mark.parametrize("args, message", [
    (["--latents", "3,64"], "latent 64 does not exist: the SAE has 64 latents (0..63)"),
    ([], "no text: pass --prompt TEXT or --file FILE (one text a line)"),
    (["--file", "/nonexistent/prompts.txt"], "--file /nonexistent/prompts.txt: no such file"),
])
def test_features_cli_errors(minilm_sae, capsys, args, message):
    prompt = [] if not args or args[0] == "--file" else ["--prompt", "hi"]
    code, out, err = run_cli(["features", str(minilm_sae), *prompt, *args], capsys)
    assert code == 2 and out == ""
    assert err == f"sae-lab features: error: {message}\n"


def test_steer_cli_errors(minilm_sae, tiny_lm, tmp_path, capsys):
    code, _, err = run_cli(["steer", "--sae", str(minilm_sae), "--edit", "3:x2", "--prompt",
                            "hi"], capsys)
    assert code == 2 and err.startswith("sae-lab steer: error: model ")
    assert err.endswith("is not a causal LM; steering needs one to generate\n")
    assert err.count("\n") == 1
    code, _, err = run_cli(["steer", "--sae", str(minilm_sae), "--edit", "3:x2", "--edit",
                            "99:+1", "--prompt", "hi"], capsys)
    assert (code, err) == (2, "sae-lab steer: error: latent 99 does not exist: the SAE has 64 "
                           "latents (0..63)\n")
    code, _, err = run_cli(["steer", "--sae", str(minilm_sae), "--edit", "3x2", "--prompt",
                            "hi"], capsys)
    assert code == 2 and "argument --edit: cannot read edit '3x2'" in err


@pytest.mark.slow
def test_steer_cli_on_tiny_gpt2(tiny_lm, tmp_path, capsys):
    sae = make_sae()
    sae.metadata.update(model=str(tiny_lm), layer=1, hook="resid_post")
    sae.save(tmp_path / "sae")
    code, out, err = run_cli(["steer", "--sae", str(tmp_path / "sae"), "--edit", "all:x0.5",
                              "--edit", "3:+40", "--splice", "--prompt", "KING RICHARD:",
                              "--max-new-tokens", "8", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["edits"] == ["all:x0.5", "3:+40"] and data["splice"] == "drop-error"
    assert data["steered"] != data["unsteered"]
    code, out, err = run_cli(["steer", "--sae", str(tmp_path / "sae"), "--edit", "3:+40",
                              "--prompt-only", "--prompt", "KING RICHARD:",
                              "--max-new-tokens", "8", "--width", "70"], capsys)
    assert code == 0, err
    assert "unsteered" in out and "| steered (3:+40; prompt only)" in out
