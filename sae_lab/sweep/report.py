"""A finished (or interrupted) sweep -> results.csv, pareto.png and best/.

    results.csv          one row per trial: architecture, hyperparameters, final validation
                         metrics, tokens, wall time, status, error, node
    pareto.png           L0 against FVU, one colour per architecture, the frontier drawn
    best/<arch>/         the best trial of each architecture by the sweep's metric
    best/frontier_<i>/   the Pareto-optimal trials, i = 0 the sparsest
    best/summary.json    which trial each directory came from, with its metrics

Every directory in best/ is an SAE saved by SAE.save (input normalisation folded in), loadable
with `sae_lab.load`. "n/a" marks a value that does not apply (k of a ReLU SAE, the error of a
trial that did not fail, the metrics of a trial that failed before its first validation).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

from sae_lab.files import atomic_dir, atomic_file
from sae_lab.sae.registry import ARCHITECTURES
from sae_lab.sweep.space import SweepConfig, trial_values

NA = "n/a"
METRIC_COLUMNS = ("fvu", "mse", "l0", "l1", "dead_frac", "objective", "tokens", "wall_time_s")
STANDARD_PARAMS = ("lr", "sparsity_coef", "k", "expansion_factor")


def write_report(grid: Any, sweep: SweepConfig, out: str | Path) -> list[dict[str, Any]]:
    """Write results.csv, pareto.png and best/ under `out` from a Tune ResultGrid."""
    out = Path(out)
    rows, checkpoints = collect_rows(grid, sweep, out)
    write_csv(rows, out / "results.csv")
    front = pareto_front(rows)
    plot_pareto(rows, front, out / "pareto.png")
    export_best(rows, checkpoints, front, sweep, out / "best")
    return rows


def collect_rows(grid: Any, sweep: SweepConfig, out: Path) -> tuple[list[dict], dict[str, Any]]:
    """(rows, trial -> Tune checkpoint) with every column of results.csv filled."""
    trials = _trials(grid)
    extra = sorted({k for p in sweep.params.values() for k in p}
                   - {"lr", *(f"sae.{n}" for n in STANDARD_PARAMS)})
    rows, checkpoints = [], {}
    for result in grid:
        trial = Path(result.path).name
        state = trials.get(trial)
        # a trial that never reported (queued when the sweep was stopped) has no result.config
        config = result.config or (state.config if state else None)
        if not config:
            continue
        arch, values = trial_values(sweep, config)
        cfg = sweep.train_config(arch, values)
        cls = ARCHITECTURES[arch]
        m = result.metrics or {}
        row: dict[str, Any] = {"trial": trial, "architecture": arch, "lr": cfg.lr}
        row["sparsity_coef"] = cfg.sae.lam if "sparsity_coef" in cls.uses else NA
        row["k"] = cfg.sae.k if "k" in cls.uses else NA
        row["expansion_factor"] = cfg.sae.expansion_factor if not cfg.sae.d_sae else NA
        for key in extra:
            row[key] = _get_path(cfg, key)
        for key in METRIC_COLUMNS:
            row[key] = m.get(key, NA)
        if row["wall_time_s"] != NA:
            row["wall_time_s"] = round(row["wall_time_s"], 3)
        row["status"] = _status(result, m, state.status if state else None, cfg)
        row["failures"] = state.num_failures if state else 0
        row["error"] = _one_line(result.error) if result.error else NA
        row["node"] = m.get("node", NA)
        row["hostname"] = m.get("hostname", NA)
        ckpt = result.checkpoint
        row["checkpoint"] = _relative(ckpt.path, out) if ckpt else NA
        if ckpt:
            checkpoints[trial] = ckpt
        rows.append(row)
    rows.sort(key=lambda r: (r["architecture"], r["trial"]))
    return rows, checkpoints


def _relative(path: str, out: Path) -> str:
    """A checkpoint path relative to the output directory when it lies under it (local)."""
    p = Path(path)
    return str(p.relative_to(out)) if p.is_relative_to(out) else path


def _trials(grid: Any) -> dict[str, Any]:
    """Trial directory name -> Tune's Trial (status, retries, config), read back from disk."""
    from ray.tune import ExperimentAnalysis

    return {Path(t.path).name: t for t in ExperimentAnalysis(grid.experiment_path).trials}


def _status(result: Any, m: dict, tune_status: str | None, cfg: Any) -> str:
    """done: trained to max_tokens; stopped_early: ASHA stopped it; failed; unfinished."""
    if result.error:
        return "failed"
    if tune_status in ("PENDING", "RUNNING", "PAUSED") or "tokens" not in m:
        return "unfinished"
    return "done" if m["tokens"] >= cfg.max_steps * cfg.batch_size else "stopped_early"


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


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(rows[0]) if rows else ["trial", "architecture", *METRIC_COLUMNS, "status"]
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _measured(row: dict[str, Any]) -> bool:
    return (row["status"] in ("done", "stopped_early")
            and all(isinstance(row[k], float) and math.isfinite(row[k]) for k in ("fvu", "l0")))


def pareto_front(rows: list[dict[str, Any]]) -> list[int]:
    """Indices of rows no other row beats on both L0 and FVU (lower is better), by L0."""
    idx = sorted((i for i, r in enumerate(rows) if _measured(r)),
                 key=lambda i: (rows[i]["l0"], rows[i]["fvu"]))
    front, best_fvu = [], math.inf
    for i in idx:
        if rows[i]["fvu"] < best_fvu:
            front.append(i)
            best_fvu = rows[i]["fvu"]
    return front


def plot_pareto(rows: list[dict[str, Any]], front: list[int], path: Path) -> None:
    """L0 (x) against FVU (y): a colour per architecture, hollow markers for trials ASHA stopped,
    the frontier as a staircase."""
    # A bare Figure, not pyplot: the caller's backend (a notebook's inline one) stays as it is.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    ax = fig.subplots()
    archs = sorted({r["architecture"] for r in rows})
    colours = colormaps["tab10"]
    for c, arch in enumerate(archs):
        label = arch
        for status, fill in (("done", True), ("stopped_early", False)):
            pts = [r for r in rows if r["architecture"] == arch and r["status"] == status
                   and _measured(r)]
            if pts:
                ax.scatter([r["l0"] for r in pts], [r["fvu"] for r in pts], s=36, label=label,
                           facecolors=colours(c) if fill else "none", edgecolors=colours(c))
                label = None
    if front:
        xs = [rows[i]["l0"] for i in front]
        ys = [rows[i]["fvu"] for i in front]
        ax.plot(xs, ys, drawstyle="steps-post", color="black", lw=1, marker="o", ms=11,
                mfc="none", label="Pareto frontier")
    measured = [r["l0"] for r in rows if _measured(r) and r["l0"] > 0]
    if measured and max(measured) / min(measured) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    ax.set_title("Sweep: sparsity against reconstruction (hollow: stopped early)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")


def export_best(rows: list[dict[str, Any]], checkpoints: dict[str, Any], front: list[int],
                sweep: SweepConfig, target: Path) -> None:
    """best/<arch>/ by the sweep's metric and best/frontier_<i>/, built aside then swapped in."""
    sign = 1 if sweep.mode == "min" else -1
    picks: dict[str, dict[str, Any]] = {}
    for arch in sweep.architectures:
        cands = [r for r in rows if r["architecture"] == arch and _measured(r)
                 and isinstance(r[sweep.metric], float) and r["trial"] in checkpoints]
        if cands:
            picks[arch] = min(cands, key=lambda r: sign * r[sweep.metric])
    for n, i in enumerate(front):
        if rows[i]["trial"] in checkpoints:
            picks[f"frontier_{n}"] = rows[i]
    with atomic_dir(target, "sweep best", known=("summary.json", "frontier_*", *ARCHITECTURES)
                    ) as tmp:
        for name, row in picks.items():
            with checkpoints[row["trial"]].as_directory() as ckpt:
                shutil.copytree(Path(ckpt) / "sae", tmp / name)
        summary = {name: {k: row[k] for k in row if k != "checkpoint"}
                   for name, row in picks.items()}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
