"""`sae-lab push` against a local HTTP server speaking the Hub's create-repo, preupload and
commit endpoints: the files and the model card that arrive, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
from helpers.fake_hub import FakeHub
from helpers.hub import fake_sweep, max_diff
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.share.layouts import load_folder

D_IN = 16
TOKEN = "hf_test_secret_token_123"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login is read
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        yield server
    finally:
        server.close()


def arrived(server: FakeHub, path: str, tmp_path):
    """The SAE folder at `path` of the upload, written back to disk and loaded."""
    out = tmp_path / "arrived" / path
    out.mkdir(parents=True)
    for name, data in server.files.items():
        if name.rsplit("/", 1)[0] == path or ("/" not in name and path == "."):
            (out / name.rsplit("/", 1)[-1]).write_bytes(data)
    return load_folder(out)


def test_push_one_sae(hub, tmp_path, capsys):
    sae = make_sae(D_IN, 48, "topk")
    sae.metadata.update(model="gpt2", layer=3, hook="resid_post")
    sae.save(tmp_path / "sae")
    (tmp_path / "sae" / "eval").mkdir()
    (tmp_path / "sae" / "eval" / "eval.json").write_text(json.dumps({"fvu": 0.1234, "l0": 8}))
    main(["push", str(tmp_path / "sae"), "me/tiny-sae", "--private", "--commit-message", "hi"])
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert hub.created == [{"name": "tiny-sae", "organization": "me", "visibility": "private"}]
    assert all(hub.authorized)
    assert hub.commits[0]["summary"] == "hi" and hub.commits[0]["revision"] == "main"
    assert {"cfg.json", "sae_weights.safetensors", "README.md"} <= set(hub.files)
    card = hub.files["README.md"].decode()
    assert "topk" in card and "gpt2" in card and "0.1234" in card
    assert "hf://me/tiny-sae" in card and "SAE.load_from_disk" in card
    assert max_diff(sae, arrived(hub, ".", tmp_path), D_IN) <= 1e-6
    assert not list(tmp_path.glob("**/" + TOKEN))


def test_push_sweep(hub, tmp_path):
    saes = {"topk": make_sae(D_IN, 48, "topk"), "frontier_0": make_sae(D_IN, 48, "relu", seed=1)}
    sweep = fake_sweep(tmp_path / "sweep", saes)
    main(["push", str(sweep), "me/sweep", "--revision", "v1"])
    assert hub.branches == ["v1"] and hub.commits[0]["revision"] == "v1"
    for name in saes:
        assert f"{name}/cfg.json" in hub.files
        assert max_diff(saes[name], arrived(hub, name, tmp_path), D_IN) <= 1e-6
    assert "pareto.png" in hub.files
    card = hub.files["README.md"].decode()
    assert "![Pareto plot](pareto.png)" in card and "frontier_0" in card
    assert "architecture: topk" in card  # the training config


def run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sae-lab {argv[0]}: error: ")
    return lines[0]


def test_push_refusals(hub, tmp_path, capsys, monkeypatch):
    make_sae(D_IN, 48, "topk").save(tmp_path / "sae")
    assert "not a Hub repo id" in run_error(["push", str(tmp_path / "sae"), "bad id!"], capsys)
    monkeypatch.delenv("HF_TOKEN")
    assert "no Hugging Face token" in run_error(["push", str(tmp_path / "sae"), "me/x"], capsys)
    assert hub.paths == []  # nothing sent
