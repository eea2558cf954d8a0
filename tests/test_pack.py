"""Packs: N SAEs from one data stream, each as if trained alone."""

import json

import pytest
import torch
import yaml

from sae_lab.train.config import TrainConfig
from sae_lab.train.pack import train_pack
from sae_lab.train.run import train

BASE = {
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 4096}},
    "batch_size": 128,
    "max_tokens": 128 * 12,
    "lr_warmup_steps": 3,
    "val_every_steps": 6,
    "val_batches": 2,
    "log_every_steps": 4,
    "progress_bar": False,
}
# Three architectures, different k / lambda / lr / expansion / schedules.
MEMBERS = {
    "relu": {"sae": {"architecture": "relu", "sparsity_coef": 3.0, "expansion_factor": 2},
             "lr": 1e-3, "sparsity_warmup_steps": 4},
    "topk": {"sae": {"architecture": "topk", "k": 4, "expansion_factor": 4}, "lr": 2e-3},
    "jumprelu": {"sae": {"architecture": "jumprelu", "expansion_factor": 3}, "lr": 5e-4,
                 "lr_decay_start": 0.5},
}


def member_cfgs(tmp_path, dtype="float64", **over):
    cfgs = []
    for name, own in MEMBERS.items():
        d = yaml.safe_load(yaml.safe_dump({**BASE, **own, **over}))
        d["sae"]["dtype"] = dtype
        d["out_dir"] = str(tmp_path / name)
        cfgs.append(TrainConfig.from_dict(d))
    return cfgs


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 1e-5)])
def test_pack_of_three_architectures_equals_each_run_alone(tmp_path, dtype, tol):
    cfgs = member_cfgs(tmp_path, dtype)
    alone = [train(c, logger=False, progress_lines=False) for c in cfgs]
    packed = train_pack(cfgs, list(MEMBERS), tmp_path / "pack", logger=False,
                        save_checkpoints=False)
    for a, p in zip(alone, packed, strict=True):
        assert p.status == "done"
        sa, sp = a.sae.state_dict(), p.sae.state_dict()
        assert sa.keys() == sp.keys()
        for k in sa:
            assert torch.allclose(sa[k].double(), sp[k].double(), rtol=0, atol=tol), (p.name, k)
        for k in ("fvu", "mse", "l0", "l1", "dead_frac", "tokens"):
            assert a.metrics[k] == pytest.approx(p.metrics[k], abs=tol, rel=0), (p.name, k)
    # the members really trained (and differ): not three copies of the initial weights
    assert packed[0].metrics["fvu"] < 1 and packed[1].metrics["l0"] <= 4


# --- early stopping per member, across packs (no Ray needed) -------------------------------

ASHA = {"time_attr": "tokens", "max_t": 800, "grace_period": 100, "reduction_factor": 2,
        "brackets": 1}  # rungs at 100, 200, 400 tokens


def test_members_stop_at_the_right_rung_across_packs_within_their_architecture(tmp_path):
    from sae_lab.sweep.packs import MemberRungs

    rungs = MemberRungs(ASHA, "objective", "min", str(tmp_path / "rungs.jsonl"))
    arch = {"relu_a": "relu", "topk_a": "topk", "relu_b": "relu", "topk_b": "topk",
            "relu_c": "relu"}  # pack A: *_a; pack B: *_b, relu_c
    # (member, tokens, objective) in the order the two packs report
    reports = [
        ("relu_a", 100, 0.5), ("relu_b", 100, 0.3),
        ("topk_a", 100, 0.9),  # worse than every relu so far, but the first topk: goes on
        ("topk_b", 100, 0.1),
        ("relu_c", 100, 0.7),  # median of relu_a (pack A) and relu_b (pack B) is 0.4: stop
        ("relu_b", 200, 0.2),
        ("relu_a", 200, 0.45),  # pack A's member, beaten by pack B's relu_b at rung 200: stop
        ("topk_b", 200, 0.05),
        ("topk_a", 200, 0.8),  # stop
        ("topk_b", 300, 0.04),  # between rungs: nothing to compare
    ]
    answers = {(m, t): rungs.report(m, arch[m], {"tokens": t, "objective": o})
               for m, t, o in reports}
    assert rungs.stopped() == {"relu_c": 100.0, "relu_a": 200.0, "topk_a": 200.0}
    assert answers[("topk_a", 100)] and answers[("topk_b", 300)]
    # A pack retried from its checkpoint repeats a report: the same answer, nothing recorded
    assert not rungs.report("relu_a", "relu", {"tokens": 200, "objective": 0.01})
    # A resumed sweep (new actor) replays the log and knows every rung
    again = MemberRungs(ASHA, "objective", "min", str(tmp_path / "rungs.jsonl"))
    assert again.stopped() == rungs.stopped()
    assert not again.report("relu_d", "relu", {"tokens": 100, "objective": 0.6})


def test_packs_group_configs_by_data_stream():
    from sae_lab.sweep.packs import expand, make_packs
    from sae_lab.sweep.space import sweep_from_dict

    d = {"base": {**BASE, "sae": {"expansion_factor": 2}},
         "architectures": ["relu", "topk", "batchtopk"],
         "space": {"relu": {"sparsity_coef": {"grid": [1.0, 2.0, 4.0]}},
                   "topk": {"k": {"grid": [2, 4, 8]}, "batch_size": {"grid": [128, 64]}},
                   "batchtopk": {"k": {"grid": [2, 4, 8]}}},
         "pack": 4, "search": "grid"}
    sweep = sweep_from_dict(d)
    members = expand(sweep)
    assert len(members) == 3 + 6 + 3 and len({m.name for m in members}) == 12
    packs = make_packs(sweep)
    assert sorted(len(p) for p in packs) == [1, 3, 4, 4]  # 9 at batch 128 (4+4+1), 3 at 64
    for p in packs:
        assert len({sweep.train_config(m.architecture, m.values).batch_size for m in p}) == 1
    auto = sweep_from_dict({**d, "pack": "auto"})
    assert sorted(len(p) for p in make_packs(auto, slots=2)) == [1, 2, 4, 5]


def test_packed_sweep_one_row_per_member_nan_member_fails_alone(tmp_path):
    import csv

    import ray

    from sae_lab import load
    from sae_lab.sweep.run import run_sweep
    from sae_lab.sweep.space import sweep_from_dict

    sweep = sweep_from_dict({
        "base": {**BASE, "max_tokens": 128 * 16, "val_every_steps": 4, "lr": 3e-3,
                 "sae": {"expansion_factor": 2}},
        "architectures": ["relu", "topk"],
        # lr=1e30 overflows to inf at step 1 (nan_policy: error): those members fail alone
        "space": {"relu": {"sparsity_coef": {"grid": [0.5, 1.0, 8.0]}},
                  "topk": {"k": {"grid": [2, 6]}, "lr": {"grid": [3e-3, 1e30]}}},
        "scheduler": {"type": "asha", "grace_tokens": 512},
        "search": "grid", "pack": 4, "resources": {"cpus": 1},
    })
    out = tmp_path / "sweep"
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        result = run_sweep(sweep, out, verbose=0)
    finally:
        ray.shutdown()
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["trial"] for r in rows) == sorted(
        ["relu_000", "relu_001", "relu_002", "topk_003", "topk_004", "topk_005", "topk_006"])
    assert {r["pack"] for r in rows} == {"pack000", "pack001"}
    failed = [r for r in rows if r["status"] == "failed"]
    assert sorted(r["trial"] for r in failed) == ["topk_004", "topk_006"]  # lr=1e30
    assert {r["pack"] for r in failed} == {"pack000", "pack001"}  # and their packs went on
    for r in failed:
        assert r["error"].startswith("NonFiniteBatchError: step 1: non-finite loss"), r["error"]
    ok = [r for r in rows if r["status"] != "failed"]
    assert {r["status"] for r in ok} <= {"done", "stopped_early"} and len(ok) == 5
    stopped = [r for r in ok if r["status"] == "stopped_early"]
    assert stopped, "ASHA stopped no member"
    for r in ok:
        assert float(r["objective"]) == pytest.approx(float(r["fvu"]) + float(r["l0"]) / 16)
        want = 2048.0 if r["status"] == "done" else None
        assert float(r["tokens"]) == want or 512 <= float(r["tokens"]) < 2048
        tb = out / "tune" / r["pack"] / "members" / r["trial"] / "tensorboard"
        assert list(tb.glob("events.out.tfevents*")), r["trial"]  # one TB run per member
    best = result.best("relu")
    assert best is not None and load(out / "best" / "relu").d_in == 16
    assert json.loads((out / "best" / "summary.json").read_text())["relu"]["trial"] == best.trial
