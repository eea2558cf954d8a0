"""A sweep's `evaluate:` on a prebuilt sweep output (no Ray): the bench scores the SAEs `on`
names, results.csv gains bench_<metric> columns, and a second run scores only what is missing."""

from __future__ import annotations

import csv
import json

import pytest
from helpers.tiny import CTX, HOOK, LAYER, make_sae

from sae_lab.config import ConfigError, parse
from sae_lab.sweep.bench import bench_sweep
from sae_lab.sweep.report import SweepResult, TrialRecord, export_best, write_csv
from sae_lab.sweep.schema import SweepConfig

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def sweep_output(tmp_path, tiny_lm):
    out = tmp_path / "sweep"
    trials = []
    for i, (arch, fvu, l0) in enumerate([("topk", 0.3, 8.0), ("topk", 0.5, 4.0),
                                          ("relu", 0.6, 20.0)]):
        name = f"{arch}_{i}"
        ckpt = out / "tune" / name / "checkpoint_000001"
        sae = make_sae(64, 32, arch, seed=i)
        sae.metadata.update(model=str(tiny_lm), layer=LAYER, hook=HOOK, ctx_len=CTX)
        sae.save(ckpt / "sae")
        trials.append(TrialRecord(name, arch, {"lr": 1e-3}, {
            "fvu": fvu, "l0": l0, "objective": fvu + l0 / 16}, "done", checkpoint=str(ckpt)))
    return SweepResult(trials, out=out)


def sweep_config(shards, on, **more):
    return parse(SweepConfig, {
        "architectures": ["topk", "relu"],
        "base": {"data": {"shards": str(shards), "val_shards": 1}},
        "space": {"all": {"lr": {"grid": [1e-3, 2e-3]}}},
        "evaluate": {"tasks": ["core"], "on": on, "n_seqs": 2, "max_tokens": 500},
        **more,
    }, "sweep")


def test_sweep_evaluate_scores_the_frontier_then_only_what_is_missing(tmp_path, tiny_lm,
                                                                     tiny_shards):
    result = sweep_output(tmp_path, tiny_lm)
    out = result.out
    sweep = sweep_config(tiny_shards, "frontier")
    assert [t.trial for t in result.frontier()] == ["topk_1", "topk_0"]
    write_csv(result.rows(), out / "results.csv")
    export_best(result, sweep, out / "best")
    said: list[str] = []
    found = bench_sweep(result, sweep, say=said.append)
    assert said[0] == f"bench: 2 SAE(s) to score (0 already in {out}/bench/bench.json)"
    assert [r.label for r in found.rows] == ["topk_1", "topk_0"]
    assert all("ce_score" in r.metrics for r in found.rows)
    with open(out / "results.csv") as f:
        rows = {r["trial"]: r for r in csv.DictReader(f)}
    assert float(rows["topk_0"]["bench_fvu"]) == found.rows[1].metrics["fvu"]
    assert rows["relu_2"]["bench_fvu"] == "n/a" and rows["relu_2"]["fvu"] == "0.6"
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert bench["config"]["last_shards"] == 1  # the sweep's held-out shards
    assert (out / "bench" / "bench.png").is_file()

    # --resume: nothing new on the frontier; with on: all only relu_2 is scored
    said.clear()
    again = bench_sweep(result, sweep, say=said.append)
    assert said[0] == f"bench: 0 SAE(s) to score (2 already in {out}/bench/bench.json)"
    assert [r.metrics for r in again.rows] == [r.metrics for r in found.rows]
    said.clear()
    # the same bench settings: rows carry over; best/topk is now the topk trial of highest
    # bench cos among those within 0.25 FVU of the best (both)
    everything = sweep_config(tiny_shards, "all", select={"metric": "cos", "mode": "max",
                                                          "within_fvu": 0.25})
    found = bench_sweep(result, everything, say=said.append)
    assert said[0] == f"bench: 1 SAE(s) to score (2 already in {out}/bench/bench.json)"
    assert [r.label for r in found.rows] == ["topk_1", "topk_0", "relu_2"]
    with open(out / "results.csv") as f:
        assert all(r["bench_fvu"] != "n/a" for r in csv.DictReader(f))
    cos = {r.label: r.metrics["cos"] for r in found.rows}
    chosen = max(["topk_0", "topk_1"], key=cos.get)
    assert chosen == "topk_0" and result.best("topk").trial == "topk_1"  # select changed it
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert summary["topk"]["trial"] == chosen and summary["relu"]["trial"] == "relu_2"
    assert summary["frontier_0"]["trial"] == "topk_1"


def test_select_by_a_bench_metric_needs_every_trial_benched(tiny_shards):
    with pytest.raises(ConfigError, match="sweep.evaluate.on='frontier': must be all with "
                       "select.metric: absorption_full"):
        sweep_config(tiny_shards, "frontier", select={"metric": "absorption_full"})


def test_compare_archs_yaml_benches_its_frontier_offline_and_ends_with_the_table(
        tmp_path, minilm_shards):
    """The shipped compare_archs.yaml at tiny size: it validates against MiniLM shards, and its
    end-of-sweep step on a prebuilt output (one SAE per trial, as its config builds them) runs
    core, sparse probing and absorption offline and ends with the table."""
    import torch

    from sae_lab.sae import ARCHITECTURES
    from sae_lab.sweep.schema import load_sweep, validate

    sweep = load_sweep("compare_archs.yaml", [
        "base.sae.expansion_factor=1", "evaluate.max_tokens=600", "evaluate.probe_texts=4",
        "evaluate.probe_sets=[prose_or_code]", "evaluate.ks=[1]",
        "evaluate.absorption_min_tokens=20"], shards=minilm_shards)
    assert sweep.evaluate.tasks == ["core", "sparse_probing", "absorption"]
    assert validate(sweep, d_in=384).d_in["topk"] == 384  # (one shard here: none to train on)
    out = tmp_path / "sweep"
    trials = []
    for i, (arch, fvu, l0) in enumerate([("topk", 0.4, 32.0), ("relu", 0.5, 50.0)]):
        # relu is beaten on both: the frontier is topk alone
        ckpt = out / "tune" / f"{arch}_{i}" / "checkpoint_000001"
        torch.manual_seed(i)
        sae = ARCHITECTURES[arch](sweep.train_config(arch, {}).sae.with_d_in(384))
        sae.metadata.update(model=MINILM, layer=3, hook="resid_post", ctx_len=64)
        sae.save(ckpt / "sae")
        trials.append(TrialRecord(f"{arch}_{i}", arch, {"lr": 4e-4}, {
            "fvu": fvu, "l0": l0, "objective": fvu + l0 / 384}, "done", checkpoint=str(ckpt)))
    result = SweepResult(trials, out=out)
    export_best(result, sweep, out / "best")
    said: list[str] = []
    found = bench_sweep(result, sweep, say=said.append)
    assert [r.label for r in found.rows] == ["topk_0"]
    for r in found.rows:
        assert {"fvu", "probe_sae_top1", "absorption_full"} <= set(r.metrics), r.metrics
    assert f"core: CE/KL skipped: model {MINILM} has no LM head (not a causal LM)" in said
    table = (out / "bench" / "bench.md").read_text()
    assert table.startswith("| sae | architecture | d_sae | fvu |")
    assert "| topk_0 | topk | 384 |" in table
    assert said[-2] == table.rstrip("\n")  # the table (and its notes), then where it is
    assert said[-1].startswith(f"bench: {out}/bench/bench.md")
    for name in ("pareto_l0_bench_probe_sae_top1.png", "pareto_l0_bench_absorption_full.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_a_select_metric_no_task_writes_is_refused_with_a_suggestion(tiny_shards):
    # core writes cos; absorption is not among evaluate's tasks here, and "coss" is a typo
    sweep_config(tiny_shards, "all", select={"metric": "cos", "mode": "max"})
    with pytest.raises(ConfigError, match="select.metric='coss'.*did you mean 'cos'"):
        sweep_config(tiny_shards, "all", select={"metric": "coss", "mode": "max"})
    with pytest.raises(ConfigError, match="select.metric='absorption_full'"):
        sweep_config(tiny_shards, "all", select={"metric": "absorption_full"})
