"""`sae-lab push` against a local HTTP server speaking the Hub's create-repo, preupload and
commit endpoints: the files and the model card that arrive, and the one-line refusals."""

from __future__ import annotations

import json

import pytest
from helpers.fake_hub import FakeHub, serving
from helpers.hub import fake_sweep, max_diff
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.share.layouts import load_folder

D_IN = 16
TOKEN = "hf_test_secret_token_123"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with serving(monkeypatch, tmp_path, TOKEN) as server:
        yield server


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


# --- sae-lab sweep --push ------------------------------------------------------------------------

SWEEP_YAML = """\
name: tiny
base:
  data: {synthetic: {d: 16, n_features: 32, active: 3, n_tokens: 4096}}
  max_tokens: 4096
architectures: [topk]
space: {topk: {k: {grid: [2, 4]}}}
search: grid
"""


def test_sweep_push_is_refused_before_the_sweep_runs(hub, tmp_path, capsys, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(SWEEP_YAML)
    out = tmp_path / "out"
    argv = ["sweep", str(tmp_path / "tiny.yaml"), "--out", str(out), "--no-plan-check"]
    assert "not a Hub repo id" in run_error([*argv, "--push", "bad id!"], capsys)
    assert "go with --push" in run_error([*argv, "--private"], capsys)
    monkeypatch.delenv("HF_TOKEN")
    assert "no Hugging Face token" in run_error([*argv, "--push", "me/x"], capsys)
    assert "no Hugging Face token" in run_error([*argv, "--push", "me/x", "--check"], capsys)
    assert not out.exists() and hub.paths == []  # no sweep ran, nothing sent


def test_sweep_push_at_the_end_uploads_best_and_the_frontier(hub, tmp_path, capsys):
    from sae_lab.cli import build_parser
    from sae_lab.cli.sweep import push_results, resume_command

    saes = {"topk": make_sae(D_IN, 48, "topk"), "frontier_0": make_sae(D_IN, 48, "relu", seed=1),
            "frontier_1": make_sae(D_IN, 48, "topk", seed=2)}
    sweep = fake_sweep(tmp_path / "sweep", saes)  # what a finished sweep leaves in --out
    (sweep / "config.yaml").unlink()
    (sweep / "sweep.yaml").write_text(SWEEP_YAML)
    argv = ["sweep", "tiny.yaml", "--out", str(sweep), "--push", "me/tiny-sweep", "--private",
            "--revision", "v2"]
    args = build_parser(argv).parse_args(argv)
    push_results(args, str(sweep), "tiny")
    assert capsys.readouterr().out.startswith("pushed 3 SAE(s) (topk, frontier_0, frontier_1) to "
                                              "me/tiny-sweep: ")
    assert hub.created == [{"name": "tiny-sweep", "organization": "me", "visibility": "private"}]
    assert hub.commits[0]["summary"] == "sae_lab sweep tiny" and hub.branches == ["v2"]
    for name in saes:
        assert max_diff(saes[name], arrived(hub, name, tmp_path), D_IN) <= 1e-6
    card = hub.files["README.md"].decode()
    assert "![Pareto plot](pareto.png)" in card and "pareto.png" in hub.files
    assert "space: {topk: {k: {grid: [2, 4]}}}" in card  # the sweep's YAML
    assert resume_command(args, str(sweep)).endswith(
        "--resume --out " + str(sweep) + " --push me/tiny-sweep --private --revision v2")
