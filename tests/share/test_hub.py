"""hf:// specs through a Hub cache built by hand (HF_HUB_OFFLINE=1): sae_lab's own uploads, a
SAELens pretrained release's folder layout and sparsify's layout each load to the source SAE."""

from __future__ import annotations

import json

import pytest
from helpers.hub import hub_cache, max_diff, offline_hub, sparsify_folder
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.export import export_saelens
from sae_lab.lm.attach import load_sae_dir
from sae_lab.share.hub import parse_spec, resolve_sae_dir

D_IN = 16


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    cache.mkdir()
    offline_hub(monkeypatch, cache, tmp_path / "sae_lab_cache")
    return cache


def test_parse_spec():
    assert parse_spec("hf://o/n") == ("o/n", "", None)
    assert parse_spec("hf://o/n/layer_3/w16k@v1.0") == ("o/n", "layer_3/w16k", "v1.0")
    for bad in ("hf://onlyname", "hf://o/n@", "hf://o/../x", "hf:///n"):
        with pytest.raises(ValueError, match="not a Hub SAE"):
            parse_spec(bad)


def test_own_upload_layout(hub, tmp_path):
    """What `sae-lab push` uploads for one SAE: SAELens files at the repo root (+ README.md)."""
    sae = make_sae(D_IN, 48, "batchtopk")
    sae.threshold.fill_(0.2)
    sae.metadata.update(model="gpt2", layer=4, hook="mlp_out")
    src = export_saelens(sae, tmp_path / "up")
    (src / "README.md").write_text("# card\n")
    hub_cache(hub, "me/sae", src)
    back = load_sae_dir(resolve_sae_dir("hf://me/sae"))
    assert max_diff(sae, back, D_IN) <= 1e-6
    assert (back.metadata["layer"], back.metadata["hook"]) == (4, "mlp_out")


def test_saelens_release_layout(hub, tmp_path):
    """A pretrained release: one folder per hook point, cfg.json in the older flat form."""
    saes = {}
    for layer in (0, 1):
        sae = make_sae(D_IN, 48, "relu", seed=layer)
        out = export_saelens(sae, tmp_path / "rel" / f"blocks.{layer}.hook_resid_pre")
        cfg = json.loads((out / "cfg.json").read_text())
        flat = {k: v for k, v in cfg.items() if k != "metadata"}
        flat.update(model_name="gpt2", hook_name=f"blocks.{layer}.hook_resid_pre",
                    hook_layer=layer, activation_fn_str="relu")
        flat.pop("architecture")
        (out / "cfg.json").write_text(json.dumps(flat))
        saes[layer] = sae
    hub_cache(hub, "peer/gpt2-saes", tmp_path / "rel")
    back = load_sae_dir(resolve_sae_dir("hf://peer/gpt2-saes/blocks.1.hook_resid_pre@main"))
    assert max_diff(saes[1], back, D_IN) <= 1e-6
    assert (back.metadata["layer"], back.metadata["hook"]) == (0, "resid_post")
    with pytest.raises(ValueError, match="holds 2 SAEs"):
        resolve_sae_dir("hf://peer/gpt2-saes")


def test_sparsify_layout(hub, tmp_path):
    sae = make_sae(D_IN, 48, "topk")
    sparsify_folder(sae, tmp_path / "run" / "layers.3")
    hub_cache(hub, "eleuther/sae-tiny", tmp_path / "run")
    back = load_sae_dir(resolve_sae_dir("hf://eleuther/sae-tiny/layers.3"))
    assert max_diff(sae, back, D_IN) <= 1e-6
    assert back.metadata["layer"] == 3


def run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sae-lab {argv[0]}: error: ")
    return lines[0]


def test_cli_errors(hub, tmp_path, capsys):
    out = tmp_path / "out"
    msg = run_error(["export", "hf://nobody/missing", "--out", str(out)], capsys)
    assert "hf://nobody/missing" in msg
    msg = run_error(["export", "hf://bad", "--out", str(out)], capsys)
    assert "not a Hub SAE" in msg
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "params.npz").write_bytes(b"x")
    hub_cache(hub, "o/junk", tmp_path / "junk")
    assert "unknown SAE layout" in run_error(["export", "hf://o/junk", "--out", str(out)], capsys)
    assert not out.exists() and not (tmp_path / "sae_lab_cache").exists()


def test_cli_export_from_hub(hub, tmp_path):
    sae = make_sae(D_IN, 48, "topk")
    sparsify_folder(sae, tmp_path / "run" / "layers.3")
    hub_cache(hub, "eleuther/sae-tiny", tmp_path / "run")
    main(["export", "hf://eleuther/sae-tiny/layers.3", "--out", str(tmp_path / "exp")])
    from sae_lab.share.layouts import load_folder
    assert max_diff(sae, load_folder(tmp_path / "exp"), D_IN) <= 1e-6
