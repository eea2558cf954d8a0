"""kaggle/: the kernel metadata Kaggle needs for two T4s, the time budget, and the runner's
--smoke mode (CPU, tiny random GPT-2, a local text file) end to end."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
KAGGLE = REPO / "kaggle"
SCRIPT = KAGGLE / "sae_lab_kaggle.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sae_lab_kaggle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_metadata_asks_for_two_t4s_with_internet():
    meta = json.loads((KAGGLE / "kernel-metadata.json").read_text())
    assert meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["enable_gpu"] is True and meta["enable_internet"] is True
    assert meta["kernel_type"] == "script" and meta["language"] == "python"
    assert (KAGGLE / meta["code_file"]).resolve() == SCRIPT
    assert meta["id"].endswith("/sae-lab-t4x2")


def test_sweep_it_runs_packs_one_pack_per_gpu():
    kaggle = load_script()
    sweep = yaml.safe_load((REPO / "sweeps" / kaggle.SWEEP).read_text())
    assert sweep["pack"] == "auto" and sweep["resources"]["gpus"] == 1  # a pack per GPU
    assert sweep["max_concurrent"] == 2  # Kaggle's two T4s
    # the smoke overrides only shrink the run, they do not change what is compared
    keys = {o.split("=", 1)[0] for o in kaggle.SMOKE_SWEEP}
    assert not keys & {"architectures", "metric", "mode"}


def test_live_switch_makes_the_sweep_read_the_model_live(tmp_path):
    """--live: the sweep's base.data becomes data.live with what the harvest would have run
    (the model and text, layer, ctx_len, forward batch, dtype), and no shards."""
    from sae_lab.sweep.schema import load_sweep

    kaggle = load_script()
    args = kaggle.parse_args(["--live", "--model", "gpt2", "--layer", "6", "--ctx-len", "128"])
    source = kaggle.live_source(args, "gpt2", kaggle.DATASET, 6)
    sweep = load_sweep(REPO / "sweeps" / kaggle.SWEEP, ["base.max_tokens=8192"], live=source)
    data = sweep.base["data"]
    assert "shards" not in data and data["live"]["model"] == "gpt2"
    assert data["live"]["layers"] == [6] and data["live"]["ctx_len"] == 128
    assert data["live"]["dataset_name"] == kaggle.DATASET_NAME
    assert args.live and not kaggle.parse_args([]).live
    # --live alone runs the sweep file's own live source (Llama-3.2-3B layer 16, float16)
    bare = kaggle.parse_args(["--live"])
    own = kaggle.sweep_live(kaggle.SWEEP)
    model, dataset = kaggle.inputs(bare, tmp_path, own)
    layer = kaggle.run_layer(bare, model, own)
    assert (model, dataset, layer) == ("meta-llama/Llama-3.2-3B", kaggle.DATASET, 16)
    live = kaggle.live_source(bare, model, dataset, layer, own)
    assert live == {**own, "split": "train", "text_column": "text"}
    assert kaggle.parse_args([]).model_dtype == "float32"  # the harvest's default stays


def test_budget_sends_sigint_when_time_is_up():
    kaggle = load_script()
    got = []
    old = signal.signal(signal.SIGINT, lambda *_: got.append(time.monotonic()))
    try:
        with kaggle.Budget(hours=0.3 / 3600, reserve_minutes=0) as budget:  # 0.3 s
            assert not budget.fired
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.02)
        assert budget.fired and len(got) == 1
        with kaggle.Budget(hours=1.0, reserve_minutes=60) as spent:  # nothing left
            assert spent.fired
        assert len(got) == 1  # no signal: the run skips straight to exporting
    finally:
        signal.signal(signal.SIGINT, old)


SECRET = "hf_kaggle_secret_456"


def kaggle_secrets(secrets: dict[str, str]) -> types.ModuleType:
    """A stand-in for Kaggle's kaggle_secrets module (only Kaggle's Python has it)."""
    class UserSecretsClient:
        def get_secret(self, label):
            if label not in secrets:
                raise KeyError(label)  # what Kaggle raises is not ours to name
            return secrets[label]

    module = types.ModuleType("kaggle_secrets")
    module.UserSecretsClient = UserSecretsClient
    return module


def test_push_needs_a_repo_and_a_token(tmp_path, monkeypatch, capsys):
    kaggle = load_script()
    monkeypatch.setenv("HF_TOKEN", "")  # undone after the test, whoever sets it later
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login
    monkeypatch.setitem(sys.modules, "kaggle_secrets", None)  # not on Kaggle: no such module
    assert kaggle.hub_token() is None
    assert kaggle.push_target("") is None and capsys.readouterr().out == ""  # none asked for
    assert kaggle.push_target("me/saes") is None
    assert "not pushing to me/saes: no Hugging Face token" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a Hub repo id"):
        kaggle.push_target("not a repo")
    # on Kaggle without the secret
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({}))
    assert kaggle.hub_token() is None and "HF_TOKEN" not in os.environ
    # with it: read into the environment, where huggingface_hub finds it; never printed
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({"HF_TOKEN": SECRET}))
    assert kaggle.hub_token() == SECRET and os.environ["HF_TOKEN"] == SECRET
    assert kaggle.push_target("me/saes") == "me/saes"
    assert kaggle.parse_args([]).push == kaggle.PUSH_REPO
    assert SECRET not in capsys.readouterr().out


def test_push_at_the_end_sends_the_sweeps_best(tmp_path, monkeypatch, capsys):
    from helpers.fake_hub import serving
    from helpers.hub import fake_sweep
    from helpers.tiny import make_sae

    kaggle = load_script()
    monkeypatch.setitem(sys.modules, "kaggle_secrets", kaggle_secrets({"HF_TOKEN": SECRET}))
    sweep = fake_sweep(tmp_path / "sweep", {"topk": make_sae(16, 32, "topk")})
    with serving(monkeypatch, tmp_path, token=None) as hub:
        kaggle.hub_token()
        assert kaggle.push_results(kaggle.push_target("me/kaggle-saes"), sweep, private=True) == 0
    assert hub.created[0]["visibility"] == "private" and all(hub.authorized)
    assert {"topk/cfg.json", "topk/sae_weights.safetensors", "pareto.png", "README.md"} <= \
        set(hub.files)
    out = capsys.readouterr().out
    assert "pushed 1 SAE(s) (topk) to https://huggingface.co/me/kaggle-saes" in out
    assert SECRET not in out


@pytest.mark.slow
def test_smoke_run_harvests_sweeps_and_exports(tmp_path, corpus):
    out = tmp_path / "kaggle"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("KAGGLE_KERNEL_RUN_TYPE", None)
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--out", str(out),
           "--dataset", str(corpus)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # a causal model built from config, harvested at its middle layer (2 layers -> layer 1)
    assert json.loads((out / "tiny-gpt2" / "config.json").read_text())["n_layer"] == 2
    manifest = json.loads((out / "shards" / "layer_1" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["tokens"] == 8192
    assert manifest["dataset"]["path"] == str(corpus)

    with open(out / "sweep" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["architecture"] for r in rows) == ["batchtopk", "jumprelu", "topk"]
    assert all(r["status"] == "done" for r in rows), rows
    recorded = yaml.safe_load((out / "sweep" / "sweep.yaml").read_text())
    assert recorded["resources"]["gpus"] == 0 and recorded["name"] == "kaggle_t4x2"

    for arch in ("topk", "batchtopk", "jumprelu"):
        cfg = json.loads((out / "exports" / arch / "cfg.json").read_text())
        assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
        assert (out / "exports" / arch / "sparsity.safetensors").is_file()
        assert json.loads((out / "eval" / arch / "eval.json").read_text())["fvu"] < 1.0
    html = (out / "browser" / "index.html").read_text()
    assert '"promoted":[[' in html  # a causal LM: each latent's promoted output tokens
    assert str(out / "exports") in proc.stdout
