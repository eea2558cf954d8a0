"""Sweeps: validation, the sparsity-aware early-stopping rule, and real Ray Tune runs on a
simulated two-node cluster (tiny synthetic trials on CPU)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

import sae_lab
from sae_lab.sae.config import ConfigError
from sae_lab.sweep.scheduler import build_scheduler
from sae_lab.sweep.schema import sweep_from_dict, validate
from sae_lab.sweep.space import check_resources, param_space, trial_values
from sae_lab.training.metrics import objective

REPO = Path(__file__).resolve().parents[2]
# Tiny trials checkpoint many times a second; Tune warns that its state snapshots keep up.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def tiny_sweep(**overrides) -> dict:
    """Three architectures, 16-dim synthetic data, 16 steps per trial."""
    d = {
        "name": "tiny",
        "base": {
            "data": {"synthetic": {"d": 16, "n_features": 48, "active": 3, "n_tokens": 8192},
                     "val_fraction": 0.125},
            "batch_size": 256, "max_tokens": 4096, "val_every_steps": 4, "val_batches": 0,
            "lr": 3e-3, "lr_warmup_steps": 2, "log_every_steps": 4,
        },
        "architectures": ["relu", "topk", "jumprelu"],
        "space": {
            "all": {"expansion_factor": 2},
            "relu": {"sparsity_coef": {"loguniform": [0.5, 2]}},
            "topk": {"k": {"grid": [2, 6]}},
            "jumprelu": {"sparsity_coef": {"uniform": [0.05, 0.2]}},
        },
        "scheduler": {"type": "asha", "grace_tokens": 2048},
        "resources": {"cpus": 1},
        "max_failures": 1,
    }
    d.update(overrides)
    return d


# --- fast: no Ray cluster -------------------------------------------------------------------


def fake_trial(trial_id: str, arch: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"trial": {"architecture": arch}})


def rung_result(fvu: float, l0: float, d_in: int = 64, tokens: float = 2048.0) -> dict:
    return {"fvu": fvu, "l0": l0, "tokens": tokens,
            "objective": objective(fvu, l0, d_in=d_in, l0_weight=1.0)}


def test_objective_ranks_by_price_of_sparsity_not_raw_fvu():
    dense = rung_result(fvu=0.05, l0=32.0)  # better FVU only because half the latents fire
    sparse = rung_result(fvu=0.20, l0=4.0)
    assert dense["objective"] == pytest.approx(0.05 + 32 / 64)
    assert sparse["objective"] == pytest.approx(0.20 + 4 / 64)

    # ASHA as the sweep builds it: at the first rung the dense trial is the one stopped.
    sweep = sweep_from_dict(tiny_sweep())
    sched = build_scheduler(sweep, validate(sweep))
    sched.set_search_properties(sweep.metric, sweep.mode)
    a, b = fake_trial("sparse", "topk"), fake_trial("dense", "topk")
    for t in (a, b):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, a, sparse) == "CONTINUE"
    assert sched.on_trial_result(None, b, dense) == "STOP"

    # The same rung ranked on raw FVU would keep the dense trial and favour it.
    raw = build_scheduler(sweep, validate(sweep))
    raw.set_search_properties("fvu", "min")
    for t in (a, b):
        raw.on_trial_add(None, t)
    assert raw.on_trial_result(None, a, sparse) == "CONTINUE"
    assert raw.on_trial_result(None, b, dense) == "CONTINUE"


def test_asha_compares_trials_only_within_their_architecture():
    sweep = sweep_from_dict(tiny_sweep())
    sched = build_scheduler(sweep, validate(sweep))
    sched.set_search_properties(sweep.metric, sweep.mode)
    topk = fake_trial("t", "topk")
    relu_fast, relu_slow = fake_trial("r1", "relu"), fake_trial("r2", "relu")
    for t in (topk, relu_fast, relu_slow):
        sched.on_trial_add(None, t)
    # TopK sits at L0 = k from step 0; ReLU is still dense at the first rung. Ranked together
    # the ReLU trial would be stopped for converging more slowly; it meets only ReLU trials.
    assert sched.on_trial_result(None, topk, rung_result(fvu=0.2, l0=4.0)) == "CONTINUE"
    assert sched.on_trial_result(None, relu_fast, rung_result(fvu=0.3, l0=20.0)) == "CONTINUE"
    assert sched.on_trial_result(None, relu_slow, rung_result(fvu=0.3, l0=30.0)) == "STOP"
    assert set(sched.groups) == {"topk", "relu"}


@pytest.mark.parametrize("change, culprit", [
    ({"tyop": 1}, "unknown field 'tyop'"),
    ({"space": {"relu": {"lrr": {"uniform": [0.1, 1]}}}}, "space.relu.lrr: unknown parameter"),
    ({"space": {"relu": {"lr": 1e-3}}}, "space.relu: empty search space"),
    ({"space": {"topk": {"k": {"grid": [4, 64]}}}},
     "sae.k=64 (k or k_start) is larger than the number of latents d_sae=32"),
    ({"space": {"all": {"k": {"choice": [4, 8]}}}},
     "sae.k=4 does not apply to architecture 'relu'"),
    ({"space": {"gated": {"lr": {"uniform": [0.1, 1]}}}}, "space.gated: not one of"),
    ({"space": {"relu": {"lr": {"logunifrom": [0.1, 1]}}}},
     "space.relu.lr={'logunifrom': [0.1, 1]}: expected a constant or one of"),
    ({"space": {"relu": {"lr": {"loguniform": [0, 1]}}}},
     "space.relu.lr.loguniform=[0.0, 1.0]: must be [lo, hi] with 0 < lo < hi"),
    ({"space": {"relu": {"lr": {"choice": []}}}},
     "space.relu.lr.choice=[]: must have at least 1 item"),
    ({"metric": "fvu"}, "metric: fvu with scheduler: asha would stop the sparser relu trials"),
    ({"num_samples": 2, "space": {"topk": {"k": {"grid": [2, 4]}}}},
     "space.topk: only fixed or grid values, so num_samples=2 would repeat identical trials"),
    ({"base": {"sparsity_warmup_steps": 12}}, "ends before the sparsity warm-up"),
    ({"search": "grid"}, "search: grid needs grid/choice"),
    ({"architectures": ["relu", "topk", "toppk"]}, "unknown architecture 'toppk'"),
    ({"resources": {"gpus": 1.5}}, "resources.gpus=1.5"),
    ({"base": {"lr": -1}}, "lr=-1: must be > 0"),
    ({"pack": 0}, "pack=0: must be a whole number >= 1 or auto"),
    ({"search": "optuna", "pack": 4}, "pack=4: must be 1 with search: optuna"),
])
def test_bad_sweeps_fail_before_launch_naming_the_culprit(change, culprit):
    d = tiny_sweep()
    for key, value in change.items():
        if key == "space":
            d["space"] = {**d["space"], **value}
        elif key == "base":
            d["base"] = {**d["base"], **value}
        else:
            d[key] = value
    if change.get("space", {}).get("relu") == {"lr": 1e-3}:
        d["space"].pop("all")
    with pytest.raises(ConfigError) as e:
        validate(sweep_from_dict(d))
    assert culprit in str(e.value)


def test_optuna_is_an_optional_extra():
    d = tiny_sweep(search="optuna", num_samples=2)
    try:
        import optuna  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'sae-lab\[optuna\]'"):
            validate(sweep_from_dict(d))
        return
    sweep = sweep_from_dict(d)
    validate(sweep)
    assert sweep.num_trials == 6


def test_more_gpus_than_any_node_is_an_error():
    sweep = sweep_from_dict(tiny_sweep(resources={"cpus": 1, "gpus": 2}))
    two_t4 = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    with pytest.raises(ConfigError, match=r"resources.gpus=2 per trial, but the largest node .* "
                                          r"1 GPU \(2 in total over 2 node"):
        check_resources(sweep, two_t4)
    check_resources(sweep_from_dict(tiny_sweep(resources={"cpus": 1, "gpus": 0.5})), two_t4)
    with pytest.raises(ConfigError, match="resources.cpus=8"):
        check_resources(sweep_from_dict(tiny_sweep(resources={"cpus": 8})), two_t4)


def test_param_space_expands_per_architecture():
    from ray.tune.search.variant_generator import generate_variants

    d = tiny_sweep(num_samples=3)
    d["space"]["topk"]["k"] = {"loguniform": [2, 8]}  # integer field -> integer draws
    d["space"]["relu"]["lr"] = "1e-3"  # YAML 1.1 reads this as a string
    sweep = sweep_from_dict(d)
    assert sweep.num_trials == 9
    configs = []
    for _ in range(sweep.num_samples):
        configs += [cfg for _, cfg in generate_variants(param_space(sweep))]
    archs = [trial_values(sweep, c)[0] for c in configs]
    assert sorted(archs) == sorted(["relu", "topk", "jumprelu"] * 3)
    for c in configs:
        arch, values = trial_values(sweep, c)
        cfg = sweep.train_config(arch, values)
        assert cfg.sae.architecture == arch and cfg.sae.expansion_factor == 2
        if arch == "topk":
            assert isinstance(values["sae.k"], int) and 2 <= values["sae.k"] <= 8
        if arch == "relu":
            assert cfg.lr == 1e-3 and 0.5 <= cfg.sae.sparsity_coef <= 2
    # optuna hands over flat "<arch>:<key>" names; constants come from the sweep
    arch, values = trial_values(sweep, {"architecture": "topk", "topk:sae.k": 5})
    assert (arch, values) == ("topk", {"sae.expansion_factor": 2, "sae.k": 5})


def test_shipped_sweeps_validate(tmp_path):
    from sae_lab.sweep.schema import load_sweep

    (tmp_path / "manifest.json").write_text(json.dumps({"d_in": 384}))
    names = sorted(p.name for p in (REPO / "sweeps").glob("*.yaml"))
    assert {"demo.yaml", "compare_archs.yaml", "kaggle_t4x2.yaml", "cluster.yaml"} <= set(names)
    for name in names:
        sweep = load_sweep(REPO / "sweeps" / name, shards=tmp_path)
        assert validate(sweep)
    demo = load_sweep("demo.yaml")  # by name, with its own CPU-sized synthetic data
    assert len(demo.architectures) >= 3 and demo.resources.gpus == 0
    validate(demo)
    assert set(load_sweep("compare_archs.yaml", shards=tmp_path).architectures) == set(
        sae_lab.ARCHITECTURES)
    kaggle = load_sweep("kaggle_t4x2.yaml", shards=tmp_path)
    assert kaggle.pack == "auto" and kaggle.resources.gpus == 1  # one pack per GPU


# --- slow: real sweeps on a simulated two-node Ray cluster ----------------------------------


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, connect=True,
                head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_cpu_sweep_results_pareto_best(cluster, tmp_path):
    import matplotlib.image
    import ray

    from sae_lab.sweep.run import run_sweep
    from sae_lab.training.run import evaluate_rows, make_datamodule

    d = tiny_sweep()
    # A fifth, doomed trial: lr=1e30 overflows to inf at step 1 (nan_policy: error). It is the
    # last one generated, so the first two (one per node) run side by side.
    d["space"]["jumprelu"]["lr"] = {"grid": [3e-3, 1e30]}
    # A fresh worker per trial: the first trial holds node 1's only CPU until it ends, so the
    # second must start on node 2 (a reused worker could run them all before node 2 is up).
    d["reuse_actors"] = False
    sweep = sweep_from_dict(d)
    assert sweep.num_trials == 5
    out = tmp_path / "sweep"
    result = run_sweep(sweep, out, verbose=0)

    rows = read_rows(out)
    assert len(rows) == 5
    # results.csv is the typed result written out: same trials, statuses and values
    assert [{k: str(v) for k, v in r.items()} for r in result.rows()] == rows
    assert [t.status for t in result.trials] == [r["status"] for r in rows]
    assert all(v != "" for r in rows for v in r.values()), "every column filled"
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and float(failed[0]["lr"]) == 1e30
    assert failed[0]["architecture"] == "jumprelu"
    assert failed[0]["error"].startswith("sae_lab.sweep.trial.TrialError: NonFiniteBatchError: "
                                         "step 1: non-finite loss")
    assert "(on host " in failed[0]["error"]
    assert int(failed[0]["failures"]) == 2  # first try + one retry (max_failures: 1)
    ok = [r for r in rows if r is not failed[0]]
    assert {r["status"] for r in ok} <= {"done", "stopped_early"}
    assert {r["architecture"] for r in ok} == {"relu", "topk", "jumprelu"}
    for r in ok:
        assert r["error"] == "n/a"
        assert 0 < float(r["fvu"]) < 1.5 and float(r["l0"]) > 0 and float(r["tokens"]) >= 2048
        assert float(r["objective"]) == pytest.approx(float(r["fvu"]) + float(r["l0"]) / 16)
        assert (r["k"] == "n/a") == (r["architecture"] != "topk")
        assert (out / "tune" / r["trial"] / "tensorboard").is_dir()  # Lightning's TB logs
        assert list((out / "tune" / r["trial"] / "tensorboard").glob("events.out.tfevents*"))
    done_topk = [r for r in ok if r["architecture"] == "topk" and r["status"] == "done"]
    assert all(float(r["l0"]) == pytest.approx(float(r["k"])) for r in done_topk)
    # Trials ran on both simulated nodes.
    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert {r["node"] for r in ok} == node_ids and len(node_ids) == 2

    png = (out / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(out / "pareto.png").ndim == 3

    # best/: one SAE per architecture plus the frontier; reloaded, each reproduces its FVU.
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert {"relu", "topk", "jumprelu"} <= set(summary)
    front = [t.trial for t in result.frontier()]
    assert [summary[f"frontier_{i}"]["trial"] for i in range(len(front))] == front
    for r in ok:  # nothing measured beats a frontier point on both axes
        for t in front:
            f = next(p for p in ok if p["trial"] == t)
            assert not (float(r["l0"]) < float(f["l0"]) and float(r["fvu"]) < float(f["fvu"]))
    for arch in ("relu", "topk", "jumprelu"):
        cands = [r for r in ok if r["architecture"] == arch]
        assert summary[arch]["trial"] == min(cands, key=lambda r: float(r["objective"]))["trial"]
        assert result.best(arch).trial == summary[arch]["trial"]
    # rebuilt from Tune's saved state (what a re-run reuses), not from results.csv
    from sae_lab.sweep.report import load_result

    again = load_result(out, sweep)
    for a, b in zip(again.rows(), result.rows(), strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}
    assert again.best().trial == result.best().trial
    val = make_datamodule(sweep.train_config("topk", {})).val_dataloader()
    for name, row in summary.items():
        sae = sae_lab.load(out / "best" / name)
        assert sae.cfg.architecture == row["architecture"]
        metrics = evaluate_rows(sae, val)
        assert abs(metrics["fvu"] - row["fvu"]) < 1e-4, name
        assert abs(metrics["l0"] - row["l0"]) < 1e-3, name

    # The output directory now holds a sweep: starting again needs --resume.
    with pytest.raises(ConfigError, match="already holds a sweep; pass --resume"):
        run_sweep(sweep, out, verbose=0)


@pytest.mark.slow
def test_gpus_beyond_the_cluster_fail_before_any_trial(cluster, tmp_path):
    from sae_lab.sweep.run import run_sweep

    sweep = sweep_from_dict(tiny_sweep(resources={"cpus": 1, "gpus": 1}))
    with pytest.raises(ConfigError, match=r"resources.gpus=1 per trial, but the largest node of "
                                          r"the cluster has 0 GPU"):
        run_sweep(sweep, tmp_path / "gpu", verbose=0)
    assert not (tmp_path / "gpu").exists()
    with pytest.raises(ConfigError, match="--resume: no sweep to resume"):
        run_sweep(sweep_from_dict(tiny_sweep()), tmp_path / "nothing", resume=True, verbose=0)


def runs_of(out: Path, trial: str) -> list[list[float]]:
    """Tokens a trial reported, split where Tune (re)started it."""
    path = out / "tune" / trial / "result.json"
    runs = []
    for ln in (path.read_text() if path.exists() else "").splitlines():
        r = json.loads(ln)
        if r["iterations_since_restore"] == 1:
            runs.append([])
        runs[-1].append(r["tokens"])
    return runs


def trials_midway(out: Path) -> str | None:
    """A trial with two reports but not finished, once another trial has finished."""
    done = {e["trial"] for e in events(out) if e["event"] == "complete"}
    if not done or not (out / "tune").is_dir():
        return None
    for trial in (out / "tune").iterdir():
        if trial.is_dir() and trial.name.split("_", 1)[1] not in done:
            try:
                if sum(map(len, runs_of(out, trial.name))) >= 2:
                    return trial.name
            except json.JSONDecodeError:  # caught mid-write
                pass
    return None


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(cluster, tmp_path):
    """A sweep driver joins the cluster with --address, is stopped (SIGTERM, as on preemption)
    after its first trial finishes, and is resumed: every trial completes exactly once."""
    from sae_lab.sweep.run import run_sweep

    max_tokens = 16384  # 64 steps, validated every 4
    d = tiny_sweep(max_concurrent=1, scheduler={"type": "asha", "grace_tokens": 8192})
    d["base"]["max_tokens"] = max_tokens
    d["space"]["topk"]["k"] = {"grid": [2, 4, 6]}
    d["architectures"] = ["relu", "topk"]
    d["space"].pop("jumprelu")
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sae_lab.cli", "sweep", str(path), "--out", str(out),
         "--address", cluster.address, "--quiet", "--no-plan-check"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 120
    while not (midway := trials_midway(out)):  # one trial done, the next one part-way
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "no trial got part-way in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, log[-3000:]
    resume_hint = f"continue with: sae-lab sweep {path} --resume --out {out}"
    assert re.search(r"interrupted. \d trial\(s\) unfinished; " + re.escape(resume_hint), log), \
        log[-3000:]
    before = events(out)
    finished_before = {e["trial"] for e in before if e["event"] == "complete"}
    rows = read_rows(out)  # the trials created so far (one at a time: max_concurrent 1)
    assert 1 <= len(finished_before) < len(rows) < 4
    assert sum(r["status"] == "unfinished" for r in rows) == len(rows) - len(finished_before)

    rows = run_sweep(sweep_from_dict(d), out, resume=True, verbose=0).rows()
    assert {r["status"] for r in rows} <= {"done", "stopped_early"} and len(rows) == 4
    after = events(out)[len(before):]
    assert not {e["trial"] for e in after} & finished_before, "a finished trial ran again"
    completes = [e["trial"] for e in events(out) if e["event"] == "complete"]
    assert sorted(completes) == sorted({e["trial"] for e in events(out)}), completes
    for r in rows:
        runs = runs_of(out, r["trial"])
        tokens = sum(runs, [])
        assert np.all(np.diff(tokens) >= 0) and tokens[-1] == float(r["tokens"]), (r, runs)
        assert (tokens[-1] == max_tokens) == (r["status"] == "done")
        assert len(runs) == (2 if r["trial"] == midway else 1), (r["trial"], runs)
    # The trial stopped part-way went on from its last checkpoint (at most one validation
    # interval old, when the stop lands between a report and Tune's state snapshot), not step 0.
    first_val = 4 * 256
    before_stop, after_resume = runs_of(out, midway)
    assert after_resume[0] > first_val and after_resume[0] >= before_stop[-1], runs_of(out, midway)


@pytest.mark.slow
def test_packed_sweep_one_row_per_member_nan_member_fails_alone(cluster, tmp_path, tiny_lm,
                                                               corpus):
    """Two packs on the two nodes, fed live by a tiny GPT-2; `layer` is a search dimension (both
    layers in one stream); ASHA stops members across packs; NaN members fail alone."""
    from sae_lab import load
    from sae_lab.sweep.run import run_sweep

    sweep = sweep_from_dict({
        "base": {"data": {"live": {"model": str(tiny_lm), "dataset": str(corpus), "layers": [0],
                                   "ctx_len": 32, "batch_size": 16, "val_tokens": 256,
                                   "device": "cpu"},
                          "shuffle_buffer": 1024},
                 "batch_size": 128, "max_tokens": 128 * 16, "lr_warmup_steps": 3,
                 "val_every_steps": 4, "lr": 3e-3, "sae": {"expansion_factor": 2}},
        "architectures": ["relu", "topk"],
        # lr=1e30 overflows to inf at step 1 (nan_policy: error): those members fail alone
        "space": {"relu": {"sparsity_coef": {"grid": [0.5, 8.0]}, "layer": {"grid": [0, 1]}},
                  "topk": {"k": {"grid": [2, 6]}, "lr": {"grid": [3e-3, 1e30]}}},
        "scheduler": {"type": "asha", "grace_tokens": 512},
        "search": "grid", "pack": 4, "resources": {"cpus": 1},
    })
    out = tmp_path / "sweep"
    result = run_sweep(sweep, out, verbose=0)
    rows = read_rows(out)
    assert sorted(r["trial"] for r in rows) == [f"relu_{i:03d}" for i in range(4)] + \
        [f"topk_{i:03d}" for i in range(4, 8)]
    assert {r["pack"] for r in rows} == {"pack000", "pack001"}
    relu = [r for r in rows if r["architecture"] == "relu"]
    assert sorted(r["layer"] for r in relu) == ["0", "0", "1", "1"]
    assert any(len({r["layer"] for r in relu if r["pack"] == p}) == 2 for p in ("pack000",
                                                                                 "pack001"))
    failed = [r for r in rows if r["status"] == "failed"]
    assert sorted(float(r["lr"]) for r in failed) == [1e30, 1e30]
    assert {r["architecture"] for r in failed} == {"topk"}
    for r in failed:
        assert r["error"].startswith("NonFiniteBatchError: step 1: non-finite loss"), r["error"]
        assert any(o["pack"] == r["pack"] and o["status"] != "failed" for o in rows)  # went on
    ok = [r for r in rows if r["status"] != "failed"]
    assert {r["status"] for r in ok} <= {"done", "stopped_early"} and len(ok) == 6
    stopped = [r for r in ok if r["status"] == "stopped_early"]
    assert stopped, "ASHA stopped no member"
    for r in ok:
        assert float(r["objective"]) == pytest.approx(float(r["fvu"]) + float(r["l0"]) / 64)
        want = 2048.0 if r["status"] == "done" else None
        assert float(r["tokens"]) == want or 512 <= float(r["tokens"]) < 2048
        tb = out / "tune" / r["pack"] / "members" / r["trial"] / "tensorboard"
        assert list(tb.glob("events.out.tfevents*")), r["trial"]  # one TB run per member
        sae = out / r["checkpoint"] / "sae" / "sae_weights.safetensors"
        assert sae.is_file() and not (tb.parent / "final").exists()  # each SAE saved once
    # best/ per layer and architecture
    for layer in (0, 1):
        sae = load(out / "best" / f"layer{layer}_relu")
        assert sae.d_in == 64 and sae.metadata["layer"] == layer
    assert (out / "best" / "layer0_topk").is_dir() and not (out / "best" / "relu").exists()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert summary["layer0_relu"]["trial"] in {r["trial"] for r in relu if r["layer"] == "0"}
    assert result.best("relu") is not None


# A sweep driver that SIGKILLs itself when Tune hands it pack001's second checkpoint: Tune's state
# on disk names the first one (saved after it was registered); the second is already on storage.
KILL_AT_SECOND_CHECKPOINT = """
import os, signal, sys
import yaml
from ray.tune import Callback
from sae_lab.sweep import run
from sae_lab.sweep.schema import sweep_from_dict

DRIVER = os.getpid()

class KillAtSecond(Callback):
    # Tune pickles its callbacks into tuner.pkl: the resumed sweep (in the test's own process)
    # gets this one back, and must not be killed by it.
    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if trial.config["pack"]["id"] == "pack001" and checkpoint.path.endswith("_000001") \
                and os.getpid() == DRIVER:
            os.kill(os.getpid(), signal.SIGKILL)

make = run._run_config
def with_kill(*args):
    config = make(*args)
    config.callbacks.append(KillAtSecond())
    return config
run._run_config = with_kill
sweep = sweep_from_dict(yaml.safe_load(open(sys.argv[1])))
run.run_sweep(sweep, sys.argv[2], address=sys.argv[3], verbose=0)
"""


@pytest.mark.slow
def test_packed_sweep_resumes_when_the_checkpoint_its_state_names_is_gone(cluster, tmp_path):
    """Killed between a new checkpoint and the experiment state naming it, a packed sweep's
    state names checkpoint_000000, which Tune deletes (num_to_keep 1) once the next one is
    registered: --resume continues from the newest complete checkpoint on disk instead of
    failing the pack, and every member finishes once. The resumed pack's next checkpoint takes
    the number after the one the state names, the number of the newest one on disk: it must not
    be written over (nor deleted as the previous one)."""
    from sae_lab.sweep.recover import newest_complete
    from sae_lab.sweep.run import run_sweep

    # ASHA's only rung at the end: every member is judged there once, across the kill
    d = tiny_sweep(pack=2, scheduler={"type": "asha", "grace_tokens": 4096}, search="grid")
    d["base"]["max_tokens"] = 4096  # 16 steps, validated every 4
    d["architectures"] = ["relu", "topk"]
    d["space"] = {"all": {"expansion_factor": 2},
                  "relu": {"sparsity_coef": {"grid": [0.5, 2.0]}}, "topk": {"k": {"grid": [2, 6]}}}
    path = tmp_path / "packs.yaml"
    path.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_AT_SECOND_CHECKPOINT, str(path), str(out),
                           cluster.address], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    pack = out / "tune" / "pack001"
    assert (pack / "checkpoint_000001").is_dir()
    # what the kill point leaves once Tune has deleted the checkpoint its state still names
    shutil.rmtree(pack / "checkpoint_000000")
    newest = newest_complete(pack)
    newest_tokens = json.loads((newest / "members.json").read_text())["tokens"]
    result = run_sweep(sweep_from_dict(d), out, resume=True, verbose=0)
    rows = result.rows()
    assert sorted(r["trial"] for r in rows) == ["relu_000", "relu_001", "topk_002", "topk_003"]
    assert {r["status"] for r in rows} == {"done"}, rows
    completes = [e["trial"] for e in events(out) if e["event"] == "complete"]
    assert len(completes) == len(set(completes)) == 2  # each pack finished once
    reports = [json.loads(ln) for ln in (pack / "result.json").read_text().splitlines()]
    resumed_at = [r["tokens"] for r in reports if r["iterations_since_restore"] == 1][-1]
    assert resumed_at == newest_tokens + 4 * 256, reports  # the next validation after it
    # each member judged once (a report the killed driver had judged reuses its answer)
    judged = [json.loads(ln) for ln in (out / "rungs.jsonl").read_text().splitlines()]
    keys = [(r["member"], r["result"]["tokens"], r["final"]) for r in judged]
    assert len(keys) == len(set(keys))
    assert sorted(m for m, _, final in keys if final) == sorted(r["trial"] for r in rows)


def test_cli_check_prints_trials(capsys):
    from sae_lab.cli import main

    main(["sweep", "demo.yaml", "--check"])
    assert "trials, metric objective (min)" in (printed := capsys.readouterr().out)
    assert "search random, packed (pack: auto; `sae-lab plan` shows the packs): OK" in printed
    with pytest.raises(SystemExit) as e:
        main(["sweep", "demo.yaml", "--check", "--set", "space.topk.k.grid=[8,4096]"])
    assert e.value.code == 2
    assert "larger than the number of latents" in capsys.readouterr().err


def test_a_sweeps_wandb_runs_are_grouped_under_its_name():
    d = tiny_sweep()
    d["base"] = {**d["base"], "loggers": ["tensorboard", "wandb"]}
    sweep = sweep_from_dict(d)
    assert sweep.train_config("relu", {"sae.sparsity_coef": 1.0}).wandb.group == "tiny"
    assert sweep.wandb_config().group == "tiny"  # the sweep's summary run, in the same group
    d["base"]["wandb"] = {"group": "mine"}
    assert sweep_from_dict(d).train_config("relu", {}).wandb.group == "mine"
    assert sweep_from_dict(d).wandb_config().group == "mine"
    assert sweep_from_dict(tiny_sweep()).train_config("relu", {}).wandb.group is None
    assert sweep_from_dict(tiny_sweep()).wandb_config() is None
