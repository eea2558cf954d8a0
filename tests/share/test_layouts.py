"""SAELens and sparsify folders load as sae_lab SAEs whose outputs equal the source's."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.hub import fake_sweep, max_diff, sparsify_folder
from helpers.tiny import make_sae

from sae_lab.export import export_saelens
from sae_lab.share.layouts import layout_of, load_folder, pick_sae_folder
from sae_lab.share.sources import distinct, sources

D_IN = 16


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu", "gated", "batchtopk"])
def test_saelens_export_loads_back_equal(tmp_path, arch):
    sae = make_sae(D_IN, 48, arch)
    sae.metadata.update(model="gpt2", layer=3, hook="resid_post")
    if arch == "batchtopk":
        sae.threshold.fill_(0.3)
    out = export_saelens(sae, tmp_path / "x")
    assert layout_of(out) == "saelens"
    back = load_folder(out)
    assert max_diff(sae, back, D_IN) <= 1e-6
    assert (back.metadata["layer"], back.metadata["hook"], back.metadata["model"]) == \
        (3, "resid_post", "gpt2")


def test_saelens_without_b_dec_on_input_folds_it(tmp_path):
    sae = make_sae(D_IN, 48, "relu")
    sae.cfg = type(sae.cfg)(**{**sae.cfg.to_dict(), "token_norm": False})
    out = export_saelens(sae, tmp_path / "x")
    cfg = json.loads((out / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = False
    (out / "cfg.json").write_text(json.dumps(cfg))
    back = load_folder(out)
    # SAELens then computes ReLU(x W_enc + b_enc): b_dec is not subtracted
    x = torch.randn(32, D_IN)
    with torch.no_grad():
        want = torch.relu(x @ sae.W_enc + sae.b_enc) @ sae.W_dec + sae.b_dec
        assert float((back(x) - want).abs().max()) <= 1e-5


def test_sparsify_folder_loads_equal(tmp_path):
    sae = make_sae(D_IN, 48, "topk")
    folder = sparsify_folder(sae, tmp_path / "layers.2")
    assert layout_of(folder) == "sparsify"
    back = load_folder(folder)
    assert max_diff(sae, back, D_IN) <= 1e-6
    assert (back.metadata["layer"], back.metadata["hook"]) == (2, "resid_post")


def test_release_needs_a_path_and_unknown_layout_is_one_line(tmp_path):
    for name in ("a", "b"):
        export_saelens(make_sae(D_IN, 48, "relu"), tmp_path / "rel" / name)
    with pytest.raises(ValueError, match="holds 2 SAEs \\(a, b\\)"):
        pick_sae_folder(tmp_path / "rel", "hf://o/r")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "params.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown SAE layout") as e:
        pick_sae_folder(tmp_path / "junk", "hf://o/junk")
    assert "\n" not in str(e.value)


def test_a_frontier_sae_that_is_also_a_best_is_listed_once(tmp_path):
    sweep = fake_sweep(tmp_path / "sweep", {"topk": make_sae(16, 32, "topk"),
                                            "frontier_0": make_sae(16, 32, "relu", 1),
                                            "frontier_1": make_sae(16, 32, "topk")})
    summary = sweep / "best" / "summary.json"
    rows = json.loads(summary.read_text())
    rows["frontier_1"]["trial"] = rows["topk"]["trial"]  # as a sweep writes a best on the frontier
    summary.write_text(json.dumps(rows))
    listed = sources(str(sweep)).saes
    assert [s.name for s in listed] == ["topk", "frontier_0", "frontier_1"]
    assert [s.name for s in distinct(listed)] == ["topk=frontier_1", "frontier_0"]
