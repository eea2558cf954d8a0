"""The typed sweep result (records, best, frontier, table, rows) and the sweep command's
outcomes, without a Ray cluster: statuses from hand-made Tune results, known answers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from sae_lab.cli import main
from sae_lab.cli.sweep import RESUME_HELP
from sae_lab.sweep.report import (
    NA,
    SweepResult,
    TrialRecord,
    _status,
    pareto_front,
    write_csv,
)


def sweep_cli(argv: list[str]) -> int:
    """The exit code of `sae-lab sweep ARGV` (the plan check left out)."""
    try:
        main(["sweep", *argv, "--no-plan-check"])
    except SystemExit as e:
        return e.code
    return 0


def rec(name: str, arch: str, fvu: float, l0: float, status: str = "done", **config) -> TrialRecord:
    metrics = {"fvu": fvu, "l0": l0, "objective": fvu + l0 / 16, "tokens": 4096.0}
    return TrialRecord(name, arch, {"lr": 1e-3, "k": None, **config}, metrics, status,
                       checkpoint=f"/sweeps/x/tune/{name}/checkpoint_000003")


def test_best_frontier_and_table_are_known_answers():
    trials = [
        rec("relu_a", "relu", fvu=0.15, l0=8.0, sparsity_coef=2.5),   # objective 0.65
        rec("relu_b", "relu", fvu=0.10, l0=12.0, sparsity_coef=1.0),  # 0.85; on the frontier
        rec("topk_c", "topk", fvu=0.20, l0=4.0, k=4),                 # 0.45: best overall
        rec("topk_d", "topk", fvu=0.25, l0=6.0, k=6),                 # beaten by topk_c on both
        TrialRecord("relu_e", "relu", {"lr": 1e-3}, {}, "failed", error="ValueError: boom"),
    ]
    result = SweepResult(trials, "objective", "min", Path("/sweeps/x"))
    assert result.best().trial == "topk_c"
    assert result.best("relu").trial == "relu_a"
    assert [t.trial for t in result.frontier()] == ["topk_c", "relu_a", "relu_b"]
    assert result.counts() == {"done": 4, "failed": 1}
    lines = result.table().splitlines()[2:]
    assert [ln.split()[0] for ln in lines] == ["topk_c", "topk_d", "relu_a", "relu_b", "relu_e"]
    assert lines[0].split()[2] == "4" and lines[2].split()[2] == "2.5"  # k, else lambda
    assert lines[-1].split()[2:] == [NA, NA, NA, NA, NA, "failed"]
    assert SweepResult(trials, "objective", "max").best().trial == "relu_b"


def test_rows_are_flat_with_na_and_relative_checkpoints(tmp_path):
    result = SweepResult([rec("topk_c", "topk", 0.2, 4.0, k=4),
                          TrialRecord("relu_e", "relu", {"lr": 1e-3, "k": None}, {}, "failed",
                                      error="ValueError: boom")],
                         out=Path("/sweeps/x"))
    done, failed = result.rows()
    assert done["checkpoint"] == "tune/topk_c/checkpoint_000003"
    assert done["k"] == 4 and done["fvu"] == 0.2 and done["error"] == NA
    assert failed["fvu"] == NA and failed["k"] == NA and failed["error"] == "ValueError: boom"
    write_csv(result.rows(), tmp_path / "results.csv")
    with open(tmp_path / "results.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == list(done) and back[1]["checkpoint"] == NA


def test_to_frame_keeps_types():
    pd = pytest.importorskip("pandas")
    frame = SweepResult([rec("topk_c", "topk", 0.2, 4.0, k=4)]).to_frame()
    assert isinstance(frame, pd.DataFrame) and frame.loc[0, "fvu"] == 0.2


def tune_result(metrics: dict, error: BaseException | None = None) -> SimpleNamespace:
    return SimpleNamespace(metrics=metrics, error=error)


def test_nan_metrics_are_a_failed_trial_not_done():
    """Regression: a trial that ran to the end with NaN FVU counted as "done"."""
    cfg = SimpleNamespace(max_steps=16, batch_size=256)
    full = {"tokens": 4096.0, "fvu": math.nan, "l0": 3.0}
    status, error = _status(tune_result(full), full, "TERMINATED", cfg)
    assert status == "failed" and error == "non-finite validation metrics: fvu=nan"
    ok = {**full, "fvu": 0.2}
    assert _status(tune_result(ok), ok, "TERMINATED", cfg) == ("done", None)
    half = {**ok, "tokens": 1024.0}
    assert _status(tune_result(half), half, "TERMINATED", cfg) == ("stopped_early", None)
    assert _status(tune_result({}), {}, "PENDING", cfg) == ("unfinished", None)
    # and such a trial is not ranked, plotted or exported
    nan = rec("relu_n", "relu", math.nan, 3.0)
    assert not nan.measured and SweepResult([nan]).best() is None
    assert pareto_front([nan]) == []


def test_a_sweep_whose_every_trial_failed_exits_non_zero(monkeypatch, tmp_path, capsys):
    """Regression: "3 trials: 3 failed" exited 0."""
    import sae_lab.sweep.run as run

    failed = [TrialRecord(f"relu_{i}", "relu", {}, {}, "failed", error="ValueError: x")
              for i in range(3)]
    monkeypatch.setattr(run, "run_sweep", lambda *a, **k: SweepResult(failed, out=tmp_path))
    assert sweep_cli(["demo.yaml", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "3 trials: 3 failed" in captured.out
    assert captured.err.strip().splitlines() == [
        f"sae-lab sweep: error: all 3 trials failed (3x ValueError: x); each trial's log: "
        f"{tmp_path}/tune/<trial>/error.txt, the table: {tmp_path}/results.csv"]
    import sae_lab.sweep.bench as bench

    benched = []
    monkeypatch.setattr(bench, "bench_sweep", lambda result, sweep: benched.append(result))
    assert sweep_cli(["demo.yaml", "--out", str(tmp_path)]) == 1
    assert benched == []  # nothing measured: nothing to bench
    one_ok = [*failed[:2], rec("topk_c", "topk", 0.2, 4.0)]
    monkeypatch.setattr(run, "run_sweep", lambda *a, **k: SweepResult(one_ok, out=tmp_path))
    assert sweep_cli(["demo.yaml", "--out", str(tmp_path)]) == 0
    assert [r.trials for r in benched] == [one_ok]  # the sweep's `evaluate:` step ran at the end


def test_check_catches_val_shards_beyond_the_shard_count(tmp_path, capsys):
    """Regression: every trial failed at its first step; --check said OK."""
    shards = [{"name": f"shard-{i:05d}.tar"} for i in range(2)]
    (tmp_path / "manifest.json").write_text(json.dumps({"d_in": 384, "shards": shards}))
    base = ["demo.yaml", "--check", "--shards", str(tmp_path)]
    assert sweep_cli([*base, "--set", "base.data.val_shards=1"]) == 0
    capsys.readouterr()
    assert sweep_cli([*base, "--set", "base.data.val_shards=2"]) == 2
    err = capsys.readouterr().err
    assert "base.data.val_shards=2 leaves no training shards" in err
    assert f"{tmp_path} has 2 shard(s)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["../escape", "a/b", "/tmp/x", ".."])
def test_a_sweep_name_cannot_leave_the_sweeps_folder(name, capsys):
    """Regression: name: ../x made the default --out runs/sweeps/../x."""
    assert sweep_cli(["demo.yaml", "--check", "--set", f"name={name}"]) == 2
    assert f"name='{name}': must be a plain folder name" in capsys.readouterr().err


def test_resume_help_warns_that_it_unpickles(capsys):
    """Regression: --resume loads OUT/tune/tuner.pkl with pickle: the help says when it does."""
    assert sweep_cli(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "unpickled only if its sha256 is the one this sweep recorded" in help_text
    assert "--trust-state" in help_text and "Unpickling runs code" in help_text
    assert "sha256" in RESUME_HELP


def test_a_sweep_over_layers_ranks_each_layer_apart(tmp_path):
    """`layer` in the search space: best/ and the frontier per layer and architecture, a
    `layer` column, a Pareto panel per layer (built from records: no Ray)."""
    from helpers.tiny import make_sae

    from sae_lab.sweep.report import best_picks, export_best, plot_pareto

    trials = [rec("topk_0", "topk", 0.2, 4.0, layer=0),    # objective 0.45
              rec("topk_1", "topk", 0.3, 4.0, layer=0),    # 0.55
              rec("relu_2", "relu", 0.1, 12.0, layer=0),   # 0.85
              rec("topk_3", "topk", 0.5, 4.0, layer=1),    # 0.75: beaten by every layer-0 topk
              rec("relu_4", "relu", 0.4, 16.0, layer=1)]   # 1.4
    for t in trials:
        t.checkpoint = str(tmp_path / "tune" / t.trial)
        make_sae(d_in=8, d_sae=16).save(Path(t.checkpoint) / "sae")
    result = SweepResult(trials, out=tmp_path)
    assert result.layers == [0, 1] and result.best().trial == "topk_0"
    assert result.best("topk", layer=1).trial == "topk_3"
    assert [t.trial for t in result.frontier()] == ["topk_0", "relu_2"]
    assert [t.trial for t in result.frontier(1)] == ["topk_3", "relu_4"]
    picks = {name: t.trial for name, t in best_picks(result, ["topk", "relu"]).items()}
    assert picks == {"layer0_topk": "topk_0", "layer0_relu": "relu_2",
                     "layer0_frontier_0": "topk_0", "layer0_frontier_1": "relu_2",
                     "layer1_topk": "topk_3", "layer1_relu": "relu_4",
                     "layer1_frontier_0": "topk_3", "layer1_frontier_1": "relu_4"}
    export_best(result, SimpleNamespace(architectures=["topk", "relu"]), tmp_path / "best")
    summary = json.loads((tmp_path / "best" / "summary.json").read_text())
    assert summary["layer1_topk"]["layer"] == 1 and (tmp_path / "best" / "layer1_relu").is_dir()
    assert [r["layer"] for r in result.rows()] == [0, 0, 0, 1, 1]
    plot_pareto(result, tmp_path / "pareto.png")
    one = SweepResult(trials[:3], out=tmp_path)
    plot_pareto(one, tmp_path / "one.png")
    from PIL import Image

    assert Image.open(tmp_path / "pareto.png").width == 2 * Image.open(tmp_path / "one.png").width


def test_layer_is_a_search_dimension_of_one_stream(tiny_lm, corpus):
    from sae_lab.config import ConfigError
    from sae_lab.sweep.packs import expand, make_packs
    from sae_lab.sweep.report import config_columns
    from sae_lab.sweep.schema import sweep_from_dict

    live = {"model": str(tiny_lm), "dataset": str(corpus), "layers": [0], "device": "cpu"}
    d = {"base": {"data": {"live": live}, "batch_size": 64, "max_tokens": 640},
         "architectures": ["topk", "relu"], "search": "grid", "pack": 4,
         "space": {"all": {"layer": {"grid": [0, 1]}}, "topk": {"k": {"grid": [2, 4]}}}}
    sweep = sweep_from_dict(d)
    members = expand(sweep)
    assert sorted((m.architecture, m.values["layer"]) for m in members) == [
        ("relu", 0), ("relu", 1), ("topk", 0), ("topk", 0), ("topk", 1), ("topk", 1)]
    cfgs = {m.name: sweep.train_config(m.architecture, m.values) for m in members}
    assert all(c.data.live.layers == (m.values["layer"],)
               for m, c in zip(members, cfgs.values(), strict=True))
    assert [len(p) for p in make_packs(sweep)] == [4, 2]  # grouped by stream, not by layer
    assert config_columns(cfgs[members[-1].name], [])["layer"] == members[-1].values["layer"]
    shards = {**d, "base": {**d["base"], "data": {"synthetic": {"d": 16}}}}
    with pytest.raises(ConfigError, match="space.all.layer: searching layers needs base.data"):
        sweep_from_dict(shards)
