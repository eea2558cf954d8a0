"""SAELens v6 export: layout, tensor names/shapes, and SAELens's equations reproducing sae_lab."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from sae_lab.export import export_saelens
from sae_lab.sae import ARCHITECTURES, sae_config

ARCHS = sorted(ARCHITECTURES)
D_IN, D_SAE = 16, 64

# Exactly the tensors each SAELens v6 inference class has (sae_lens/saes/*_sae.py).
_LINEAR = {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,)}
SAELENS_SHAPES = {
    "standard": _LINEAR,
    "topk": _LINEAR,
    "jumprelu": {**_LINEAR, "threshold": (D_SAE,)},
    "gated": {
        "W_enc": (D_IN, D_SAE), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,), "b_gate": (D_SAE,),
        "r_mag": (D_SAE,), "b_mag": (D_SAE,),
    },
}


def make_sae(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    kw = {"k": 5} if ARCHITECTURES[arch].k_based else {}
    sae = ARCHITECTURES[arch](sae_config(arch, d_in=D_IN, d_sae=D_SAE, **kw)).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.2 * torch.randn_like(p))
        buffers = dict(sae.named_buffers())
        if "threshold" in buffers:  # BatchTopK-style global inference threshold
            buffers["threshold"].fill_(0.4)
        if hasattr(sae, "log_threshold"):
            sae.log_threshold.copy_(torch.randn(D_SAE) * 0.5 - 1.0)
    sae.metadata.update(model="gpt2", layer=3, hook="resid_post", ctx_len=128)
    return sae


def saelens_forward(cfg: dict, w: dict, x: torch.Tensor) -> torch.Tensor:
    """SAELens v6 inference, written out from sae_lens/saes/{standard,topk,jumprelu,gated}_sae,
    with normalize_activations "none" or "constant_norm_rescale" (sae_lens/saes/sae.py)."""
    coeff = 1.0
    if cfg["normalize_activations"] == "constant_norm_rescale":
        coeff = cfg["d_in"] ** 0.5 / x.norm(dim=-1, keepdim=True)
    else:
        assert cfg["normalize_activations"] == "none"
    sae_in = x * coeff - w["b_dec"] * cfg["apply_b_dec_to_input"]
    arch = cfg["architecture"]
    if arch == "gated":
        active = (sae_in @ w["W_enc"] + w["b_gate"] > 0).float()
        z = active * torch.relu(sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
    else:
        pre = sae_in @ w["W_enc"] + w["b_enc"]
        if arch == "standard":
            z = torch.relu(pre)
        elif arch == "topk":  # TopK activation: top k of pre, then ReLU on the kept values
            vals, idx = pre.topk(cfg["k"], dim=-1)
            z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        elif arch == "jumprelu":  # ReLU(pre) * 1[pre > threshold], strict
            z = torch.relu(pre) * (pre > w["threshold"]).float()
        else:
            raise AssertionError(arch)
    return (z @ w["W_dec"] + w["b_dec"]) / coeff


@pytest.mark.parametrize("arch", ARCHS)
def test_exported_tensors_reproduce_reconstructions(arch, tmp_path):
    sae = make_sae(arch)
    density = torch.rand(D_SAE)
    density[0] = 0.0
    out = export_saelens(sae, tmp_path / "exp", density=density)
    cfg = json.loads((out / "cfg.json").read_text())
    w = load_file(out / "sae_weights.safetensors")
    expected_arch = {"relu": "standard", "batchtopk": "jumprelu", "matryoshka": "jumprelu"}.get(
        arch, arch)
    assert cfg["architecture"] == expected_arch
    assert {k: tuple(v.shape) for k, v in w.items()} == SAELENS_SHAPES[expected_arch]
    assert all(v.dtype == torch.float32 for v in w.values())
    x = torch.randn(300, D_IN) * 2
    with torch.no_grad():
        ours = sae(x)
    theirs = saelens_forward(cfg, w, x)
    assert (ours - theirs).abs().max().item() < 1e-5
    # Non-trivial: some latents fire and some do not.
    assert 0 < (sae.encode(x) != 0).float().mean() < 1
    sparsity = load_file(out / "sparsity.safetensors")["sparsity"]
    assert sparsity.shape == (D_SAE,)
    assert sparsity[0].item() == pytest.approx(-10.0)
    assert sparsity[1].item() == pytest.approx(math.log10(density[1].item() + 1e-10), abs=1e-5)


def test_cfg_fields(tmp_path):
    cfg = json.loads((export_saelens(make_sae("topk"), tmp_path / "t") / "cfg.json").read_text())
    assert cfg["d_in"] == D_IN and cfg["d_sae"] == D_SAE and cfg["k"] == 5
    assert cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert cfg["rescale_acts_by_decoder_norm"] is False
    meta = cfg["metadata"]
    assert meta["model_name"] == "gpt2"
    assert meta["hook_name"] == "blocks.3.hook_resid_post"
    assert meta["context_size"] == 128
    major = int(meta["sae_lens_version"].split(".")[0])
    assert major >= 6
    assert not (tmp_path / "t" / "sparsity.safetensors").exists()  # no density given
    sae = make_sae("relu")
    sae.metadata["hook_name"] = "blocks.3.hook_mlp_out"  # the manifest's name wins
    cfg = json.loads((export_saelens(sae, tmp_path / "r", hook_name=None) / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_mlp_out"
    assert cfg["normalize_activations"] == "constant_norm_rescale"  # relu's token_norm


def test_jumprelu_threshold_is_exp_log_threshold(tmp_path):
    sae = make_sae("jumprelu")
    w = load_file(export_saelens(sae, tmp_path / "j") / "sae_weights.safetensors")
    assert torch.allclose(w["threshold"], sae.log_threshold.detach().exp())
    assert "log_threshold" not in w


def test_batchtopk_threshold_repeated(tmp_path):
    w = load_file(export_saelens(make_sae("batchtopk"), tmp_path / "b") / "sae_weights.safetensors")
    assert torch.equal(w["threshold"], torch.full((D_SAE,), 0.4))


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    import sae_lab.export as export

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "log10_density", fail)  # dies after the weights are written
    with pytest.raises(KeyboardInterrupt):
        export.export_saelens(make_sae("relu"), tmp_path / "x", density=torch.rand(D_SAE))
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_previous(tmp_path):
    export_saelens(make_sae("relu"), tmp_path / "x", density=torch.rand(D_SAE))
    export_saelens(make_sae("gated"), tmp_path / "x")
    cfg = json.loads((tmp_path / "x" / "cfg.json").read_text())
    assert cfg["architecture"] == "gated"
    assert not (tmp_path / "x" / "sparsity.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


@pytest.mark.parametrize("arch", ARCHS)
def test_real_saelens_loads_export_with_same_outputs(arch, tmp_path):
    """The real sae-lens (optional extra `saelens`; CI does not install it, so this skips there
    and the hand replay above stands in) rebuilds the export with the same codes and outputs."""
    sae_lens = pytest.importorskip("sae_lens")
    sae = make_sae(arch)
    export_saelens(sae, tmp_path / "out", density=torch.rand(D_SAE))
    loaded = sae_lens.SAE.load_from_disk(str(tmp_path / "out"), device="cpu")
    assert loaded.cfg.architecture() == sae.saelens_architecture
    torch.manual_seed(1)
    x = torch.randn(256, D_IN) * 2
    with torch.no_grad():
        z_ours, z_theirs = sae.encode(x), loaded.encode(x)
        x_ours, x_theirs = sae(x), loaded.decode(z_theirs)
    assert (z_ours != 0).any() and (z_ours == 0).any()  # some latents fire, not all
    torch.testing.assert_close(z_theirs, z_ours, rtol=0, atol=1e-5)
    torch.testing.assert_close(x_theirs, x_ours, rtol=0, atol=1e-5)


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["same", "inside", "other_sae"])
def test_export_refuses_its_input_or_another_sae(where, tmp_path, capsys):
    from sae_lab import load
    from sae_lab.cli import main

    sae_dir = make_sae("relu").save(tmp_path / "run" / "final")
    other = make_sae("gated").save(tmp_path / "other")
    out = {"same": sae_dir, "inside": sae_dir / "saelens", "other_sae": other}[where]
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["export", str(sae_dir), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sae-lab export: error: ")
    assert str(out) in err[0]
    assert _tree(tmp_path) == before  # nothing written
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["final"]
    assert load(sae_dir).name == "relu" and load(other).name == "gated"


def test_export_library_refuses_an_input_directory(tmp_path):
    from sae_lab.files import OutputDirError

    shards = tmp_path / "shards"
    shards.mkdir()
    with pytest.raises(OutputDirError, match="is inside the input"):
        export_saelens(make_sae("relu"), shards / "export", inputs=[shards])
    assert list(shards.iterdir()) == []
