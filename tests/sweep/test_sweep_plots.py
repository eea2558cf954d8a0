"""The sweep's `plot` pairs on a prebuilt SweepResult (no Ray): which columns each file draws,
which file holds which pair, and the one-line error for a column results.csv does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from sae_lab.config import ConfigError, parse
from sae_lab.sweep.report import SweepResult, TrialRecord, write_plots
from sae_lab.sweep.schema import SweepConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sweep(**more) -> SweepConfig:
    return parse(SweepConfig, {
        "architectures": ["topk", "relu"],
        "base": {"data": {"shards": "/tmp/bench25b_none", "val_shards": 1}},
        "space": {"all": {"lr": {"grid": [1e-3, 2e-3]}}},
        **more,
    }, "sweep")


def result(out: Path) -> SweepResult:
    def rec(name, arch, fvu, l0, dead, status="done"):
        return TrialRecord(name, arch, {"lr": 1e-3, "k": None},
                           {"fvu": fvu, "l0": l0, "dead_frac": dead, "objective": fvu}, status)

    return SweepResult([rec("topk_0", "topk", 0.3, 8.0, 0.1),
                        rec("topk_1", "topk", 0.5, 4.0, 0.2, "stopped_early"),
                        rec("relu_2", "relu", 0.6, 20.0, 0.0),
                        TrialRecord("relu_3", "relu", {"lr": 1e-3}, {}, "failed")], out=out)


def test_plot_pairs_draw_their_columns_and_bench_pairs_wait_for_the_bench(tmp_path):
    cfg = sweep(evaluate={"tasks": ["core", "absorption"]},
                plot=[{"x": "l0", "y": "fvu"}, {"x": "dead_frac", "y": "fvu"},
                      {"x": "l0", "y": "bench_absorption_full"}])
    res = result(tmp_path)
    drawn = write_plots(res, cfg)
    assert list(drawn) == [tmp_path / "pareto.png", tmp_path / "pareto_dead_frac_fvu.png"]
    assert not (tmp_path / "pareto_l0_bench_absorption_full.png").exists()
    # the points: measured trials (topk_1 stopped early, relu_3 failed) with both values
    assert drawn[tmp_path / "pareto_dead_frac_fvu.png"] == {
        "topk_0": (0.1, 0.3), "topk_1": (0.2, 0.5), "relu_2": (0.0, 0.6)}
    bench = {"topk_0": {"absorption_full": 0.25}, "relu_2": {"absorption_full": 0.5}}
    drawn = write_plots(res, cfg, bench)
    assert drawn == {tmp_path / "pareto_l0_bench_absorption_full.png": {
        "topk_0": (8.0, 0.25), "relu_2": (20.0, 0.5)}}  # topk_1 was not benched
    for name in ("pareto.png", "pareto_dead_frac_fvu.png", "pareto_l0_bench_absorption_full.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_a_single_pair_is_the_pareto_file_and_the_default_is_l0_fvu(tmp_path):
    assert [(a.x, a.y, f) for a, f in sweep().plot_files()] == [("l0", "fvu", "pareto.png")]
    one = sweep(plot={"x": "lr", "y": "objective"})
    assert [(a.x, a.y, f) for a, f in one.plot_files()] == [("lr", "objective", "pareto.png")]


@pytest.mark.parametrize(("plot", "evaluate", "message"), [
    ({"x": "l0", "y": "fvv"}, None, "sweep.plot[0].y='fvv': must be a numeric results.csv "
     "column; did you mean 'fvu'?"),
    ([{"x": "l0", "y": "fvu"}, {"x": "bench_absorbtion_full", "y": "fvu"}], ["absorption"],
     "sweep.plot[1].x='bench_absorbtion_full': must be a numeric results.csv column; did you "
     "mean 'bench_absorption_full'?"),
    ({"x": "l0", "y": "bench_ce_score"}, None, "sweep.plot[0].y='bench_ce_score': must be a "
     "numeric results.csv column (bench_ columns need `evaluate:`)"),
])
def test_an_unknown_plot_column_is_one_line_naming_it(plot, evaluate, message):
    more = {"evaluate": {"tasks": evaluate}} if evaluate else {}
    with pytest.raises(ConfigError) as e:
        sweep(plot=plot, **more)
    assert str(e.value) == message
