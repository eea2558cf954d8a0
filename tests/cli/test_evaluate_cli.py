"""`sae-lab eval | export | inspect | steer` end to end on the tiny model, and their bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers.tiny import CTX, HOOK, LAYER, identity_sae, make_sae
from safetensors.torch import load_file

from sae_lab.cli import main
from sae_lab.evaluate import evaluate_sae, shard_activations


def saved_sae(path, lm_dir, sae=None):
    sae = sae if sae is not None else make_sae(arch="jumprelu")
    sae.metadata.update(model=str(lm_dir), layer=LAYER, hook=HOOK, ctx_len=CTX,
                        hook_name=f"blocks.{LAYER}.hook_{HOOK}")
    sae.save(path)
    return path


def run_error(argv, capsys) -> str:
    """The one-line error of a failing command."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()  # progress bars may come first
    assert lines[-1].startswith(f"sae-lab {argv[0]}: error: ")
    assert sum("error" in ln for ln in lines) == 1
    return lines[-1]


@pytest.mark.slow
def test_eval_then_export(tiny_lm, tiny_shards, corpus, tmp_path, capsys):
    sae_dir = saved_sae(tmp_path / "sae", tiny_lm)
    main(["eval", str(sae_dir), "--shards", str(tiny_shards), "--dataset", str(corpus),
          "--n-seqs", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert re.search(r"^fvu\s+\d", out, re.M) and re.search(r"^ce_score\s+", out, re.M)
    report = json.loads((sae_dir / "eval" / "eval.json").read_text())
    want = evaluate_sae(make_sae(arch="jumprelu"), shard_activations(tiny_shards))
    assert report["fvu"] == pytest.approx(want.metrics["fvu"])
    assert report["tokens"] == want.metrics["tokens"] >= 3000
    assert report["downstream_tokens"] == 4 * CTX
    for k in ("ce_clean", "ce_sae", "ce_zero", "ce_score", "delta_ce", "kl_score", "rel_bias"):
        assert isinstance(report[k], float) and report[k] == report[k]  # present, not NaN
    assert (sae_dir / "eval" / "feature_density.png").is_file()

    # Held out: only the last shard; and a warning when evaluating on the training shards.
    from sae_lab.data.shards import read_manifest

    sae = make_sae(arch="jumprelu")
    sae.metadata["source"] = str(tiny_shards)
    trained_on = saved_sae(tmp_path / "trained-on", tiny_lm, sae)
    main(["eval", str(trained_on), "--shards", str(tiny_shards), "--last-shards", "1"])
    last = read_manifest(tiny_shards)["shards"][-1]["rows"]
    held_out = json.loads((trained_on / "eval" / "eval.json").read_text())
    assert held_out["tokens"] == last < report["tokens"]
    assert "warning" not in capsys.readouterr().err
    main(["eval", str(trained_on), "--shards", str(tiny_shards)])
    assert "the shards the SAE was trained on" in capsys.readouterr().err

    # export picks up the density that eval measured
    main(["export", str(sae_dir), "--format", "saelens", "--out", str(tmp_path / "sl")])
    assert "feature density from" in capsys.readouterr().out
    sparsity = load_file(tmp_path / "sl" / "sparsity.safetensors")["sparsity"]
    assert torch.allclose(sparsity, torch.log10(want.density.float() + 1e-10), atol=1e-5)
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["context_size"] == CTX
    assert cfg["metadata"]["hook_name"] == f"blocks.{LAYER}.hook_{HOOK}"


@pytest.mark.slow
def test_eval_identity_sae_scores_one(tiny_lm, corpus, tmp_path, capsys):
    sae_dir = saved_sae(tmp_path / "ident", tiny_lm, identity_sae(64))
    main(["eval", str(sae_dir), "--dataset", str(corpus), "--n-seqs", "3",
          "--out", str(tmp_path / "ev")])
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["ce_score"] == pytest.approx(1.0, abs=1e-5)
    assert report["kl_sae"] == pytest.approx(0.0, abs=1e-6)
    assert abs(report["ce_zero"] - report["ce_clean"]) > 1e-3


@pytest.mark.slow
def test_inspect_and_steer_commands(tiny_lm, tiny_shards, tmp_path, capsys):
    sae_dir = saved_sae(tmp_path / "sae", tiny_lm)
    main(["inspect", str(sae_dir), "--shards", str(tiny_shards), "--out", str(tmp_path / "br"),
          "--latents", "0-9,100", "--top", "3"])
    html = (tmp_path / "br" / "index.html").read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))
    assert [r["id"] for r in data["latents"]] == [*range(10), 100]
    assert all(len(r["contexts"]) <= 3 and len(r["promoted"]) == 10 for r in data["latents"])
    assert re.search(r" 3\d{3} tokens from ", data["summary"])  # harvest max_tokens=3000

    capsys.readouterr()
    main(["steer", "--sae", str(sae_dir), "--latent", "3", "--scale", "20", "--prompt",
          "ROMEO:", "--max-new-tokens", "8", "--json"])  # the older one-latent form
    data = json.loads(capsys.readouterr().out)
    assert data["edits"] == ["3:+20"] and data["steered"] != data["unsteered"]


@pytest.mark.slow
def test_bad_input_one_line_errors(tiny_lm, tiny_shards, tmp_path, capsys):
    err = run_error(["eval", str(tmp_path / "nope"), "--shards", str(tiny_shards)], capsys)
    assert "no such SAE directory" in err
    (tmp_path / "empty").mkdir()
    err = run_error(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "x")], capsys)
    assert "no cfg.json" in err and "empty" in err
    sae_dir = saved_sae(tmp_path / "sae", tiny_lm)
    err = run_error(["steer", "--sae", str(sae_dir), "--latent", "999", "--scale", "1",
                     "--prompt", "a"], capsys)
    assert "latent 999 does not exist: the SAE has 128 latents" in err
    err = run_error(["inspect", str(sae_dir), "--shards", str(tiny_shards), "--out",
                     str(tmp_path / "b"), "--latents", "5,128"], capsys)
    assert "latent 128 does not exist" in err

    narrow = saved_sae(tmp_path / "narrow", tiny_lm, make_sae(d_in=32, d_sae=64))
    err = run_error(["steer", "--sae", str(narrow), "--latent", "0", "--scale", "1",
                     "--prompt", "a"], capsys)
    assert f"SAE d_in=32 does not match the model's layer {LAYER} {HOOK} width 64" in err
    err = run_error(["eval", str(narrow), "--shards", str(tiny_shards)], capsys)
    assert "have d_in=64; the SAE has d_in=32" in err

    # A model without an LM head: the promoted-token view cannot exist.
    from transformers import AutoModel, AutoTokenizer

    body = tmp_path / "body"
    AutoModel.from_pretrained(tiny_lm).save_pretrained(body)
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(body)
    args = ["inspect", str(sae_dir), "--shards", str(tiny_shards), "--out",
            str(tmp_path / "b"), "--model", str(body), "--latents", "0-3"]
    err = run_error([*args, "--top-logits", "5"], capsys)
    assert f"model {body} has no unembedding" in err
    main(args)  # by default it is skipped with a note
    assert "skipping the promoted-token view" in capsys.readouterr().err
    assert (tmp_path / "b" / "index.html").is_file()
