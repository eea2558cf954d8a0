"""A finished (or interrupted) sweep -> a typed SweepResult -> results.csv, pareto.png and best/.

    results.csv          one row per trial (per SAE of a packed sweep, with its pack):
                         architecture, layer (live sources), hyperparameters, final validation
                         metrics, tokens, wall time, status, error, node
    pareto.png           L0 against FVU, one colour per architecture, the frontier drawn
                         (a sweep over layers: one panel per layer)
    pareto_<x>_<y>.png   the sweep's other `plot` pairs (pareto.png is its first; only (l0, fvu)
                         has the frontier drawn; pairs with bench_ columns follow the bench)
    best/<arch>/         the best trial of each architecture by the sweep's metric
    best/frontier_<i>/   the Pareto-optimal trials, i = 0 the sparsest
    best/summary.json    which trial each directory came from, with its metrics
    A sweep over layers ranks each layer apart: best/layer<L>_<arch>/, best/layer<L>_frontier_<i>/.

The library works on SweepResult (records with typed values); results.csv is written from it for
people and spreadsheets, never read back. Every directory in best/ is an SAE saved by SAE.save
(input normalisation folded in), loadable with `sae_lab.load`. In results.csv "n/a" marks a value
that does not apply (k of a ReLU SAE, the error of a trial that did not fail, the metrics of a
trial that failed before its first validation); in a TrialRecord that is None or a missing key.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sae_lab.files import atomic_dir, atomic_file
from sae_lab.sae import ARCHITECTURES
from sae_lab.sweep.schema import LAYER, SweepConfig
from sae_lab.sweep.space import trial_values
from sae_lab.training.metrics import OBJECTIVE, VAL_METRICS
from sae_lab.training.pack import FAILED, RUNNING, STOPPED

EXPERIMENT = "tune"
"""Tune's experiment directory under the sweep's output directory."""
NA = "n/a"
METRIC_COLUMNS = (*VAL_METRICS, OBJECTIVE, "tokens", "wall_time_s")
"""The metrics of a TrialRecord and their columns in results.csv."""
STANDARD_PARAMS = ("lr", "sparsity_coef", "k", "expansion_factor")
STATUSES = ("done", "stopped_early", "failed", "unfinished")
FINISHED = ("done", "stopped_early", "failed")
"""Statuses a resumed sweep does not run again."""
MEMBERS_FILE = "members.json"
"""In a pack's checkpoint: each member's status, error and latest metrics (sweep.packs)."""


@dataclass
class TrialRecord:
    """One trial of a sweep as it ended (or stands, if the sweep was interrupted)."""

    trial: str
    """Tune's trial directory name: <architecture>_<trial id>; in a packed sweep the member's
    name, <architecture>_<index>."""
    architecture: str
    config: dict[str, Any]
    """lr, sparsity_coef, k, expansion_factor and any other searched key; None: does not apply."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The last reported METRIC_COLUMNS; empty if the trial never reported."""
    status: str = "unfinished"
    """done (trained to max_tokens), stopped_early (by ASHA), failed, or unfinished."""
    error: str | None = None
    """The failed trial's last error line."""
    failures: int = 0
    node: str | None = None
    hostname: str | None = None
    checkpoint: str | None = None
    """The latest checkpoint (a directory holding sae/): a local path or a storage URI."""
    pack: str | None = None
    """The pack (Tune trial) this SAE was trained in; None in an unpacked sweep."""

    @property
    def layer(self) -> int | None:
        """The live layer the SAE read (None: not a live source)."""
        return self.config.get("layer")

    @property
    def measured(self) -> bool:
        """Finished with finite FVU and L0: a point that can be ranked and plotted."""
        return self.status in ("done", "stopped_early") and all(
            math.isfinite(self.metrics.get(k, math.nan)) for k in ("fvu", "l0"))

    def row(self, out: Path | None = None) -> dict[str, Any]:
        """The results.csv row: flat, "n/a" for what is missing, checkpoint relative to `out`."""
        row: dict[str, Any] = {"trial": self.trial, "architecture": self.architecture}
        if self.pack is not None:
            row["pack"] = self.pack
        row.update({k: NA if v is None else v for k, v in self.config.items()})
        for key in METRIC_COLUMNS:
            row[key] = self.metrics.get(key, NA)
        if row["wall_time_s"] != NA:
            row["wall_time_s"] = round(row["wall_time_s"], 3)
        ckpt = self.checkpoint
        if ckpt and out is not None and Path(ckpt).is_relative_to(out):
            ckpt = str(Path(ckpt).relative_to(out))
        row.update(status=self.status, failures=self.failures, error=self.error or NA,
                   node=self.node or NA, hostname=self.hostname or NA, checkpoint=ckpt or NA)
        return row


@dataclass
class SweepResult:
    """Every trial of a sweep, with the ranking the sweep was run with."""

    trials: list[TrialRecord]
    metric: str = OBJECTIVE
    mode: str = "min"
    out: Path | None = None
    """The sweep's output directory (results.csv, pareto.png, best/)."""
    checkpoints: dict[str, Any] = field(default_factory=dict, repr=False)
    """Trial name -> Tune Checkpoint (reads remote storage too); filled by collect()."""

    def counts(self) -> dict[str, int]:
        """Status -> number of trials."""
        return dict(sorted(Counter(t.status for t in self.trials).items()))

    @property
    def unfinished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "unfinished"]

    @property
    def measured(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.measured]

    def best(self, architecture: str | None = None, layer: int | None = None
             ) -> TrialRecord | None:
        """The measured trial (of `architecture` and `layer`, or of all) that scores best on the
        metric."""
        sign = 1 if self.mode == "min" else -1
        cands = [t for t in self.measured if architecture in (None, t.architecture)
                 and layer in (None, t.layer)
                 and math.isfinite(t.metrics.get(self.metric, math.nan))]
        return min(cands, key=lambda t: sign * t.metrics[self.metric]) if cands else None

    def frontier(self, layer: int | None = None) -> list[TrialRecord]:
        """Trials (of `layer`, or of all) no other beats on both L0 and FVU (lower is better),
        sparsest first."""
        trials = [t for t in self.measured if layer in (None, t.layer)]
        return [trials[i] for i in pareto_front(trials)]

    @property
    def layers(self) -> list[int]:
        """The layers the trials read, when they read more than one (else empty)."""
        layers = sorted({t.layer for t in self.trials if t.layer is not None})
        return layers if len(layers) > 1 else []

    def rows(self) -> list[dict[str, Any]]:
        """The rows of results.csv."""
        return [t.row(self.out) for t in self.trials]

    def to_frame(self) -> Any:
        """A pandas DataFrame of the rows, with None (not "n/a") where a value is missing."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("SweepResult.to_frame needs pandas: pip install pandas") from None
        rows = [{k: (None if v == NA else v) for k, v in r.items()} for r in self.rows()]
        return pd.DataFrame(rows)

    def table(self) -> str:
        """One line per trial, best first: architecture, its sparsity knob, L0, FVU, dead,
        metric, status. "dead" is training's dead_frac: latents that fired on none of the last
        sae.dead_tokens training tokens (evaluation's unfired_frac counts held-out tokens)."""
        sign = 1 if self.mode == "min" else -1

        def key(t: TrialRecord) -> float:
            v = t.metrics.get(self.metric, math.nan)
            return sign * v if t.measured and math.isfinite(v) else math.inf

        head = (f"{'trial':<24} {'arch':<9} {'k/lambda':>9} {'L0':>8} {'FVU':>7} {'dead':>6} "
                f"{self.metric:>9}  status")
        lines = [head, "-" * len(head)]
        for t in sorted(self.trials, key=key):
            knob = t.config.get("k") if t.config.get("k") is not None \
                else t.config.get("sparsity_coef")
            m = t.metrics
            lines.append(f"{t.trial:<24} {t.architecture:<9} {_num(knob, '.3g'):>9} "
                         f"{_num(m.get('l0'), '.1f'):>8} {_num(m.get('fvu'), '.4f'):>7} "
                         f"{_num(m.get('dead_frac'), '.1%'):>6} "
                         f"{_num(m.get(self.metric), '.4f'):>9}  {t.status}")
        return "\n".join(lines)

    def summary(self) -> str:
        """`N trials: a done, b failed`, each failure's error, and where the outputs are; for a
        sweep in which every trial failed, only the counts (failure_summary says the rest)."""
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines = [f"{len(self.trials)} trials: {counts}"]
        if self.all_failed:
            return lines[0]
        lines += [f"  failed {t.trial}: {t.error}" for t in self.trials if t.status == "failed"]
        out = self.out
        best = f", best checkpoints in {out}/best/" if self.measured else ""
        lines.append(f"results: {out}/results.csv, {out}/pareto.png{best}")
        return "\n".join(lines)

    @property
    def all_failed(self) -> bool:
        """Every trial ended, and none measured anything."""
        return bool(self.trials) and not self.measured and not self.unfinished

    def failure_summary(self) -> str:
        """One line for a sweep whose every trial failed: how many, the first error of each
        kind (with how many trials it ended), and where the logs are."""
        kinds: dict[str, list[TrialRecord]] = {}
        for t in self.trials:
            kinds.setdefault(error_kind(t.error), []).append(t)
        errors = "; ".join(f"{len(ts)}x {explain(ts[0].error)}" for ts in kinds.values())
        logs = f"{self.out}/{EXPERIMENT}/<trial>/error.txt" if self.out else "error.txt"
        return (f"all {len(self.trials)} trials failed ({errors}); each trial's log: {logs}, "
                f"the table: {self.out}/results.csv")

    def raise_if_all_failed(self) -> None:
        """SweepFailedError (failure_summary) when every trial failed."""
        if self.all_failed:
            raise SweepFailedError(self.failure_summary())


class SweepFailedError(RuntimeError):
    """Every trial of a sweep failed; the message is the one-line failure_summary."""


def error_kind(error: str | None) -> str:
    """The exception type a trial's error line names, under the sweep's TrialError wrapper."""
    text = strip_wrapper(error or "no error recorded")
    head = text.split(":", 1)[0]
    return head if " " not in head else text


def strip_wrapper(error: str) -> str:
    for prefix in ("sae_lab.sweep.trial.TrialError: ", "TrialError: "):
        if error.startswith(prefix):
            return error[len(prefix):]
    return error


NAN_HINT = "; set nan_policy: skip to skip such batches"


def explain(error: str | None) -> str:
    """A trial's error for people: without the wrapper's name, and for a loss that went
    non-finite on finite inputs the hint that fits (the training diverged), not nan_policy's."""
    text = strip_wrapper(error or "no error recorded")
    if "non-finite loss" in text and NAN_HINT in text:
        text = text.replace(NAN_HINT, "; the training diverged: lower lr or sparsity_coef")
    return text


def _num(v: Any, fmt: str) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return NA
    if fmt == ".3g" and float(v).is_integer():  # k: 8, not 8.0
        return str(int(v))
    return format(float(v), fmt)


# --- from Tune ---------------------------------------------------------------------------------


def write_report(grid: Any, sweep: SweepConfig, out: str | Path) -> SweepResult:
    """Write results.csv, pareto.png and best/ under `out` from a Tune ResultGrid."""
    result = collect(grid, sweep, Path(out))
    write_csv(result.rows(), result.out / "results.csv")
    write_plots(result, sweep)
    export_best(result, sweep, result.out / "best")
    return result


def load_result(out: str | Path, sweep: SweepConfig) -> SweepResult:
    """The SweepResult of the sweep in `out`, from Tune's saved experiment state (no Ray needed;
    results.csv is not read). Raises FileNotFoundError when `out` holds no sweep."""
    from ray.tune import ExperimentAnalysis, ResultGrid, Tuner

    exp = Path(out).resolve() / EXPERIMENT
    if not Tuner.can_restore(exp):
        raise FileNotFoundError(f"{out}: no sweep here (no Tune experiment in {exp})")
    return collect(ResultGrid(ExperimentAnalysis(str(exp))), sweep, Path(out).resolve())


def collect(grid: Any, sweep: SweepConfig, out: Path) -> SweepResult:
    """A SweepResult from a Tune ResultGrid, sorted by architecture then trial."""
    trials = _trials(grid)
    extra = sorted({k for p in sweep.params.values() for k in p}
                   - {"lr", LAYER, *(f"sae.{n}" for n in STANDARD_PARAMS)})
    if sweep.pack != 1:
        records = sorted(member_records(grid, sweep, extra),
                         key=lambda r: (r.architecture, r.trial))
        return SweepResult(records, sweep.metric, sweep.mode, out, {})
    records, checkpoints = [], {}
    for result in grid:
        name = Path(result.path).name
        state = trials.get(name)
        # a trial that never reported (queued when the sweep was stopped) has no result.config
        config = result.config or (state.config if state else None)
        if not config:
            continue
        record = _record(name, result, state, sweep.train_config(*trial_values(sweep, config)),
                         extra)
        if result.checkpoint:
            checkpoints[name] = result.checkpoint
        records.append(record)
    records.sort(key=lambda r: (r.architecture, r.trial))
    return SweepResult(records, sweep.metric, sweep.mode, out, checkpoints)


def config_columns(cfg: Any, extra: list[str]) -> dict[str, Any]:
    """The hyperparameter columns of a trial (None where a parameter does not apply)."""
    uses = ARCHITECTURES[cfg.sae.architecture].uses
    live = cfg.data.live
    return {
        "layer": live.layers[0] if live is not None else None,
        "lr": cfg.lr,
        "sparsity_coef": cfg.sae.lam if "sparsity_coef" in uses else None,
        "k": cfg.sae.k if "k" in uses else None,
        "expansion_factor": cfg.sae.expansion_factor if not cfg.sae.d_sae else None,
        **{key: _get_path(cfg, key) for key in extra},
    }


def _record(name: str, result: Any, state: Any, cfg: Any, extra: list[str]) -> TrialRecord:
    config = config_columns(cfg, extra)
    m = result.metrics or {}
    metrics = {k: float(m[k]) for k in METRIC_COLUMNS if isinstance(m.get(k), (int, float))}
    status, error = _status(result, metrics, state.status if state else None, cfg)
    # where the trial reported from (TuneReport); Ray's own "hostname" of a trial that never
    # reported is in a live ResultGrid but not in the one read back from disk
    where = m if "tokens" in metrics else {}
    return TrialRecord(
        trial=name, architecture=cfg.sae.architecture, config=config, metrics=metrics,
        status=status, error=error, failures=state.num_failures if state else 0,
        node=where.get("node"), hostname=where.get("hostname"),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
    )


def _trials(grid: Any) -> dict[str, Any]:
    """Trial directory name -> Tune's Trial (status, retries, config), read back from disk."""
    from ray.tune import ExperimentAnalysis

    return {Path(t.path).name: t for t in ExperimentAnalysis(grid.experiment_path).trials}


def _status(result: Any, m: dict[str, float], tune_status: str | None, cfg: Any
            ) -> tuple[str, str | None]:
    """(status, error). A trial that ended with non-finite FVU or L0 measured nothing: failed."""
    if result.error:
        return "failed", _one_line(result.error)
    if tune_status in ("PENDING", "RUNNING", "PAUSED") or "tokens" not in m:
        return "unfinished", None
    bad = [f"{k}={m.get(k, math.nan)}" for k in ("fvu", "l0")
           if not math.isfinite(m.get(k, math.nan))]
    if bad:
        return "failed", f"non-finite validation metrics: {', '.join(bad)}"
    return ("done" if m["tokens"] >= cfg.max_steps * cfg.batch_size else "stopped_early"), None


def member_records(grid: Any, sweep: SweepConfig, extra: list[str]) -> list[TrialRecord]:
    """TrialRecords of every member of every pack, from each pack's latest checkpoint."""
    trials = _trials(grid)
    records = []
    for result in grid:
        state = trials.get(Path(result.path).name)
        config = result.config or (state.config if state else None)
        if not config:
            continue
        pack = config["pack"]
        saved: dict[str, Any] = {}
        ckpt_dir = Path(result.checkpoint.path) if result.checkpoint else None
        if ckpt_dir is not None and (ckpt_dir / MEMBERS_FILE).is_file():
            saved = json.loads((ckpt_dir / MEMBERS_FILE).read_text())
        tune_done = state is not None and state.status == "TERMINATED"
        pack_error = _pack_error(result)
        for m in pack["members"]:
            own = saved.get("members", {}).get(m["name"], {})
            cfg = sweep.train_config(m["architecture"], m["values"])
            metrics = {k: float(v) for k, v in own.get("metrics", {}).items()
                       if isinstance(v, (int, float))}
            status, error = _member_status(own, saved.get("final", False), tune_done,
                                           pack_error, metrics)
            sae = ckpt_dir / "members" / m["name"] if ckpt_dir else None
            records.append(TrialRecord(
                trial=m["name"], architecture=m["architecture"],
                config=config_columns(cfg, extra), metrics=metrics, status=status,
                error=error, failures=state.num_failures if state else 0,
                node=(result.metrics or {}).get("node"),
                hostname=(result.metrics or {}).get("hostname"),
                checkpoint=str(sae) if sae is not None and (sae / "sae").is_dir() else None,
                pack=pack["id"]))
    return records


def _pack_error(result: Any) -> str | None:
    return _one_line(result.error) if result.error else None


def _member_status(own: dict[str, Any], final: bool, tune_done: bool, pack_error: str | None,
                   metrics: dict[str, float]) -> tuple[str, str | None]:
    status = own.get("status", RUNNING)
    if status == FAILED:
        return "failed", own.get("error") or None
    if status == STOPPED and metrics:
        return "stopped_early", None
    if final and tune_done and metrics:
        return "done", None
    if pack_error:
        return "failed", pack_error
    return "unfinished", None


def _one_line(error: BaseException) -> str:
    """The last `SomethingError: message` line of a (Ray-wrapped) trial error."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return line[:500]
    return (lines[-1] if lines else type(error).__name__)[:500]


def _get_path(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


# --- outputs -----------------------------------------------------------------------------------


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(rows[0]) if rows else ["trial", "architecture", *METRIC_COLUMNS, "status"]
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def lower_left(points: dict[int, tuple[float, float]]) -> list[int]:
    """Keys of the (L0, FVU) points no other point beats on both (lower is better), by L0."""
    front, best_fvu = [], math.inf
    for i in sorted(points, key=lambda i: points[i]):
        if points[i][1] < best_fvu:
            front.append(i)
            best_fvu = points[i][1]
    return front


def pareto_front(trials: list[TrialRecord]) -> list[int]:
    """Indices of measured trials no other trial beats on both L0 and FVU, by L0."""
    return lower_left({i: (t.metrics["l0"], t.metrics["fvu"])
                       for i, t in enumerate(trials) if t.measured})


LABELS = {"l0": "L0 (active latents per token)", "fvu": "FVU (fraction of variance unexplained)"}


def plot_value(t: TrialRecord, column: str, bench: dict[str, dict[str, float]]) -> float:
    """The trial's value in a results.csv column (a metric, a parameter or bench_<metric>);
    NaN when it has none."""
    if column.startswith("bench_") and column not in t.metrics:
        v = bench.get(t.trial, {}).get(column.removeprefix("bench_"))
    else:
        v = t.metrics.get(column, t.config.get(column))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def write_plots(result: SweepResult, sweep: SweepConfig,
                bench: dict[str, dict[str, float]] | None = None
                ) -> dict[Path, dict[str, tuple[float, float]]]:
    """Each of the sweep's `plot` pairs under result.out: without `bench` ({trial: bench
    metrics}) the pairs without bench_ columns, with it the pairs with them. Returns
    {file: {trial: (x, y)}} of what was drawn."""
    assert result.out is not None
    done = {}
    for axes, name in sweep.plot_files():
        if any(c.startswith("bench_") for c in (axes.x, axes.y)) == (bench is not None):
            done[result.out / name] = plot_pair(result, axes.x, axes.y, result.out / name, bench)
    return done


def plot_pareto(result: SweepResult, path: Path) -> None:
    """L0 (x) against FVU (y), the frontier drawn as a staircase."""
    plot_pair(result, "l0", "fvu", path)


def plot_pair(result: SweepResult, x: str, y: str, path: Path,
              bench: dict[str, dict[str, float]] | None = None) -> dict[str, tuple[float, float]]:
    """Column x against column y: a colour per architecture, hollow markers for trials ASHA
    stopped, a panel per layer in a sweep over layers; for (l0, fvu) the Pareto frontier (of the
    layer) as a staircase. Trials without a finite value in either column are left out. Returns
    {trial: (x, y)} of the points drawn."""
    # A bare Figure, not pyplot: the caller's backend (a notebook's inline one) stays as it is.
    from matplotlib.figure import Figure

    bench = bench or {}
    points = {t.trial: (plot_value(t, x, bench), plot_value(t, y, bench))
              for t in result.measured}
    points = {k: v for k, v in points.items() if all(map(math.isfinite, v))}
    layers = result.layers or [None]
    fig = Figure(figsize=(6.4 * len(layers), 4.4), dpi=120)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    archs = sorted({t.architecture for t in result.trials})
    what = "sparsity against reconstruction" if (x, y) == ("l0", "fvu") else f"{x} against {y}"
    for ax, layer in zip(axes, layers, strict=True):
        _plot_layer(ax, result, layer, archs, x, y, points)
        where = "Sweep" if layer is None else f"Layer {layer}"
        ax.set_title(f"{where}: {what} (hollow: stopped early)",
                     fontsize="medium" if layer is not None else None)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return points


def _plot_layer(ax: Any, result: SweepResult, layer: int | None, archs: list[str], x: str,
                y: str, points: dict[str, tuple[float, float]]) -> None:
    from matplotlib import colormaps

    measured = [t for t in result.measured if layer in (None, t.layer) and t.trial in points]
    colours = colormaps["tab10"]
    for c, arch in enumerate(archs):
        label = arch
        for status, fill in (("done", True), ("stopped_early", False)):
            pts = [points[t.trial] for t in measured
                   if t.architecture == arch and t.status == status]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=36, label=label,
                           facecolors=colours(c) if fill else "none", edgecolors=colours(c))
                label = None
    front = [t.metrics for t in result.frontier(layer)] if (x, y) == ("l0", "fvu") else []
    if front:
        ax.plot([m["l0"] for m in front], [m["fvu"] for m in front], drawstyle="steps-post",
                color="black", lw=1, marker="o", ms=11, mfc="none", label="Pareto frontier")
    xs = [points[t.trial][0] for t in measured if points[t.trial][0] > 0]
    if xs and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(y, y))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")


def best_picks(result: SweepResult, architectures: list[str]) -> dict[str, TrialRecord]:
    """best/'s directories: <arch> (best by the metric) and frontier_<i>, each with a
    checkpoint; a sweep over layers: layer<L>_<arch> and layer<L>_frontier_<i> per layer."""
    picks: dict[str, TrialRecord | None] = {}
    for layer in result.layers or [None]:
        prefix = "" if layer is None else f"layer{layer}_"
        picks.update({prefix + arch: result.best(arch, layer) for arch in architectures})
        picks.update({f"{prefix}frontier_{n}": t
                      for n, t in enumerate(result.frontier(layer))})
    return {name: t for name, t in picks.items() if t is not None and t.checkpoint}


def export_best(result: SweepResult, sweep: SweepConfig, target: Path,
                picks: dict[str, TrialRecord] | None = None) -> None:
    """best/<arch>/ by the sweep's metric (or as `picks` says) and best/frontier_<i>/ (a sweep
    over layers: best/layer<L>_...), built aside then swapped in."""
    picks = best_picks(result, sweep.architectures) if picks is None else picks
    with atomic_dir(target, "sweep best",
                    known=("summary.json", "frontier_*", "layer*", *ARCHITECTURES)) as tmp:
        for name, t in picks.items():
            ckpt = result.checkpoints.get(t.trial)
            if ckpt is None:  # a result rebuilt from a plain path
                shutil.copytree(Path(t.checkpoint) / "sae", tmp / name)
                continue
            with ckpt.as_directory() as local:
                shutil.copytree(Path(local) / "sae", tmp / name)
        summary = {name: {k: v for k, v in t.row(result.out).items() if k != "checkpoint"}
                   for name, t in picks.items()}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
