"""`sae-lab demo --tiny`: the demo's real code path (stdlib corpus, MiniLM harvest, Ray Tune
sweep of sweeps/demo.yaml, exports, feature browser) with tiny settings, then a re-run that
reuses everything, and a re-run with other settings that is refused."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

import sae_lab
from sae_lab.assets import stdlib_docstrings
from sae_lab.cli import main
from sae_lab.config import ConfigError, parse
from sae_lab.demo import DemoConfig
from sae_lab.pipeline import Stages
from sae_lab.sweep.schema import load_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_stdlib_corpus_is_deterministic_and_bounded():
    a = stdlib_docstrings(max_chars=20_000)
    b = stdlib_docstrings(max_chars=20_000)
    assert a == b
    total = sum(map(len, a))
    assert 20_000 <= total < 20_000 + 200_000  # stops after the file that crosses the budget
    assert all(len(d) >= 80 and "\n\n" not in d for d in a)  # one document per docstring


def test_bad_settings_are_one_line_errors(capsys):
    with pytest.raises(ConfigError, match=r"^tokens=4096: must be >= 2 \* shard_rows"):
        parse(DemoConfig, {"tokens": 4096, "shard_rows": 4096})
    with pytest.raises(SystemExit) as e:
        main(["demo", "--layer", "-1", "--out", "unused"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sae-lab demo: error: layer=-1: ") and "\n" not in err
    with pytest.raises(SystemExit) as e:
        main(["demo", "--text", "no/such/corpus.txt", "--out", "unused"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "sae-lab demo: error: --text no/such/corpus.txt: no such file"


def test_flags_come_from_the_config_fields():
    """Every DemoConfig field is a flag (its docstring the help); values reach the config."""
    import argparse

    from sae_lab.cli.args import DefaultsFormatter, add_config_arguments, config_from_args

    p = argparse.ArgumentParser(formatter_class=DefaultsFormatter)
    add_config_arguments(p, DemoConfig, flags={"overrides": "--set"})
    assert config_from_args(DemoConfig, p.parse_args([])) == DemoConfig()
    cfg = config_from_args(DemoConfig, p.parse_args(
        ["--layer", "2", "--set", "num_samples=2", "--set", "seed=1", "--tiny", "--text", "t.txt"]))
    assert (cfg.layer, cfg.overrides, cfg.text, cfg.tokens) == (2, ["num_samples=2", "seed=1"],
                                                                "t.txt", 8192)
    assert cfg.sweep_overrides[-2:] == ["num_samples=2", "seed=1"]
    assert config_from_args(DemoConfig, p.parse_args([])).overrides == []  # default not shared
    assert "Rows per shard. (default: 16384)" in " ".join(p.format_help().split())


def test_stages_are_numbered(capsys):
    stage = Stages(3)
    stage("corpus")
    stage("harvest")
    assert capsys.readouterr().out.split("\n")[1:] == [
        "[1/3] corpus  (0m00s)", "", "[2/3] harvest  (0m00s)", ""]


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "sae_lab.cli", "demo", "--tiny", "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout

    # corpus and shards: 8192 MiniLM tokens in 4 shards of 2048
    assert (out / "corpus.txt").stat().st_size > 10_000
    manifest = json.loads((out / "shards" / "layer_3" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["tokens"] == 8192 and manifest["d_in"] == 384
    assert len(manifest["shards"]) == 4

    # the sweep: every trial of sweeps/demo.yaml's (>= 3) architectures finished, the table
    # was printed
    archs = load_sweep("demo.yaml").architectures
    assert len(archs) >= 3
    with open(out / "sweep" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["architecture"] for r in rows} == set(archs)
    assert all(r["status"] in ("done", "stopped_early") for r in rows), rows
    for r in rows:
        assert r["trial"] in log
    assert (out / "sweep" / "pareto.png").read_bytes()[:8] == PNG_MAGIC

    # held-out metrics and SAELens exports of each architecture's best SAE
    for arch in archs:
        metrics = json.loads((out / "eval" / arch / "eval.json").read_text())
        assert metrics["tokens"] == 2048  # the held-out last shard, exactly
        assert 0 < metrics["fvu"] < 1.0  # beats predicting the mean, even after 4 steps
        cfg = json.loads((out / "exports" / arch / "cfg.json").read_text())
        assert cfg["d_in"] == 384 and cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
        tensors = load_file(out / "exports" / arch / "sae_weights.safetensors")
        assert tensors["W_enc"].shape == (384, cfg["d_sae"])
        sae = sae_lab.load(out / "sweep" / "best" / arch)
        assert sae.cfg.architecture == arch

    # the feature browser, and where everything is
    html = (out / "browser" / "index.html").read_text()
    assert any(f"{arch} SAE, " in html for arch in archs)
    assert '"contexts":[{' in html  # latents with decoded top-activating contexts
    for line in ("sweep results", "Pareto plot", "SAELens exports", "feature browser"):
        assert line in log
    stages = [ln.split("  (")[0] for ln in log.splitlines() if ln.startswith("[")]
    assert [s[:5] for s in stages] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"], stages
    assert "trial " in log and "finished" in log  # a line per trial event during the sweep
    assert str(out / "browser" / "index.html") in log

    # bench on the demo's sweep: its best/ and frontier SAEs, each once, on the held-out shard
    bench = tmp_path / "bench"
    main(["bench", str(out / "sweep"), "--shards", str(out / "shards" / "layer_3"),
          "--last-shards", "1", "--out", str(bench), "--tasks", "core,sparse_probing",
          "--probe-set", "prose_or_code", "--probe-texts", "8", "--k", "1"])
    table = capsys.readouterr().out
    benched = json.loads((bench / "bench.json").read_text())["rows"]
    assert {r["architecture"] for r in benched} == set(archs)
    assert len({r["directory"] for r in benched}) == len(benched)
    assert all(0 < r["metrics"]["fvu"] < 1 and "probe_sae_top1" in r["metrics"] for r in benched)
    assert table.startswith("| sae | architecture |")
    assert (bench / "bench.png").read_bytes()[:8] == PNG_MAGIC

    # re-run: harvest and sweep are reused (no trial runs again), outputs rebuilt
    events = (out / "sweep" / "events.jsonl").read_text()
    main(["demo", "--tiny", "--out", str(out)])
    again = capsys.readouterr().out
    assert again.count("finished in an earlier run") == 2
    assert (out / "sweep" / "events.jsonl").read_text() == events

    # other settings in the same directory: refused before any work, naming the difference
    with pytest.raises(SystemExit) as e:
        main(["demo", "--tiny", "--layer", "2", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "other settings (layer: 3 -> 2)" in err and len(err.strip().splitlines()) == 1
