"""The bench at the end of a sweep: the sweep YAML's `evaluate: {tasks: [...], on: ...}`.

    bench_sweep(result, sweep)
      SAEs      on: frontier -> best/frontier_*, best -> best/<architecture>, all -> every
                measured trial (its checkpoint's sae/); one row per trial, named by the trial
      resume    rows already in OUT/bench/bench.json, benched with the same config, are kept:
                only the trials missing run
      outputs   OUT/bench/ (bench.json, bench.md, bench.png, density.png, as `sae-lab bench`
                writes them) and results.csv again, with a bench_<metric> column per metric;
                the sweep's `plot` pairs that name a bench_ column
      select    with the sweep's `select: {metric, mode, within_fvu}`, best/<architecture> is
                then rebuilt: among the architecture's trials whose FVU is within `within_fvu`
                of its best, the one best by `metric` (a results.csv or a bench metric)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from sae_lab.bench.run import (
    BENCH_JSON,
    BENCH_MD,
    BenchConfig,
    BenchResult,
    BenchSAE,
    Row,
    markdown,
    run_bench,
)
from sae_lab.config import to_dict
from sae_lab.sweep.report import (
    NA,
    SweepResult,
    TrialRecord,
    best_picks,
    export_best,
    write_csv,
    write_plots,
)
from sae_lab.sweep.schema import SweepConfig

BENCH_DIR = "bench"
PREFIX = "bench_"


def bench_config(sweep: SweepConfig) -> BenchConfig:
    """The sweep's `evaluate:` as a BenchConfig, its shards defaulting to the held-out ones."""
    ev = sweep.evaluate
    assert ev is not None
    values = {f.name: getattr(ev, f.name) for f in dataclasses.fields(BenchConfig)}
    data = sweep.base.get("data") or {}
    if values["shards"] is None:
        values["shards"] = data.get("shards")
        if values["last_shards"] is None:
            values["last_shards"] = data.get("val_shards", 1)
    return BenchConfig(**values)


def targets(result: SweepResult, sweep: SweepConfig) -> list[BenchSAE]:
    """The SAEs `evaluate.on` names, one per trial, labelled with the trial's name."""
    assert sweep.evaluate is not None and result.out is not None
    on = sweep.evaluate.on
    found: dict[str, BenchSAE] = {}
    if on == "all":
        for t in result.measured:
            sae = Path(t.checkpoint or "") / "sae"
            if t.checkpoint and sae.is_dir():
                found.setdefault(t.trial, BenchSAE(t.trial, str(sae)))
        return list(found.values())
    for name, t in best_picks(result, sweep.architectures).items():
        if name.startswith("frontier_") == (on == "frontier"):
            found.setdefault(t.trial, BenchSAE(t.trial, str(result.out / "best" / name)))
    return list(found.values())


def earlier_rows(out: Path, cfg: BenchConfig) -> list[Row]:
    """The rows of an earlier bench in `out` run with the same config; none otherwise."""
    path = out / BENCH_JSON
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if data.get("config") != json.loads(json.dumps(to_dict(cfg))):
        return []
    return [Row(**r) for r in data.get("rows", [])]


def bench_sweep(result: SweepResult, sweep: SweepConfig, say: Any = print
                ) -> BenchResult | None:
    """Bench the SAEs of the sweep in result.out that have no row yet; results.csv gains the
    bench_<metric> columns; ends by saying the table. None when the sweep has no `evaluate:`."""
    if sweep.evaluate is None or result.out is None:
        return None
    cfg = bench_config(sweep)
    out = result.out / BENCH_DIR
    wanted = targets(result, sweep)
    kept = [r for r in earlier_rows(out, cfg) if r.label in {w.label for w in wanted}]
    todo = [w for w in wanted if w.label not in {r.label for r in kept}]
    say(f"bench: {len(todo)} SAE(s) to score ({len(kept)} already in {out / BENCH_JSON})")
    found = run_bench(todo, cfg, out, say=say, earlier=kept)
    by_trial = {r.label: r.metrics for r in found.rows}
    columns = list(dict.fromkeys(k for m in by_trial.values() for k in m))
    rows = [{**row, **{PREFIX + c: by_trial.get(row["trial"], {}).get(c, NA) for c in columns}}
            for row in result.rows()]
    write_csv(rows, result.out / "results.csv")
    write_plots(result, sweep, by_trial)
    if sweep.select is not None:
        picks = best_picks(result, sweep.architectures)
        picks.update(select_best(result, sweep, by_trial))
        export_best(result, sweep, result.out / "best", picks)
    say(markdown(found).rstrip("\n"))
    say(f"bench: {out / BENCH_MD}, bench_<metric> columns in {result.out / 'results.csv'}")
    return found


def select_best(result: SweepResult, sweep: SweepConfig,
                bench: dict[str, dict[str, float]]) -> dict[str, TrialRecord]:
    """{architecture: trial} chosen as the sweep's `select` says; an architecture none of
    whose candidates has the metric keeps its best by the sweep's metric."""
    sel = sweep.select
    assert sel is not None
    sign = 1 if sel.mode == "min" else -1
    picks = {}
    for arch in sweep.architectures:
        trials = [t for t in result.measured if t.architecture == arch and t.checkpoint]
        if not trials:
            continue
        best_fvu = min(t.metrics["fvu"] for t in trials)

        def value(t: TrialRecord) -> float | None:
            v = t.metrics.get(sel.metric, bench.get(t.trial, {}).get(sel.metric))
            return v if isinstance(v, (int, float)) and math.isfinite(v) else None

        cands = [t for t in trials if t.metrics["fvu"] <= best_fvu + sel.within_fvu
                 and value(t) is not None]
        if cands:
            picks[arch] = min(cands, key=lambda t: sign * value(t))  # type: ignore[operator]
    return picks
