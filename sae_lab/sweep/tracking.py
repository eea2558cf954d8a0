"""The sweep's W&B summary run: when the sweep ends, its Pareto plot and results table go to one
run in the sweep's group (beside the runs of its trials or pack members), named <sweep>-summary.

Its id is kept in OUT/wandb_run_id: a sweep resumed and finished again logs to the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_lab.sweep.report import NA, SweepResult
from sae_lab.sweep.schema import SweepConfig
from sae_lab.training.wandb_runs import finish_run, need_wandb, open_run

PLOT = "pareto.png"


def log_summary(result: SweepResult, sweep: SweepConfig, out: Path) -> str | None:
    """Log out/pareto.png and the results table to the sweep's summary run; returns its id
    (None: wandb not in the sweep's loggers)."""
    w = sweep.wandb_config()
    if w is None:
        return None
    wandb = need_wandb()
    run = open_run(w, out, sweep.to_dict(), name=f"{sweep.name}-summary",
                   job_type="sweep-summary")
    try:
        payload: dict[str, Any] = {"results": results_table(wandb, result)}
        if (out / PLOT).is_file():
            payload["pareto"] = wandb.Image(str(out / PLOT))
        run.log(payload)
        best = result.best()
        final: dict[str, Any] = {"trials": len(result.trials), **result.counts()}
        if best is not None:
            final.update({"best_trial": best.trial, f"best_{result.metric}":
                          best.metrics[result.metric]})
    except BaseException:
        finish_run(run, failed=True)
        raise
    finish_run(run, final)
    return str(run.id)


def results_table(wandb: Any, result: SweepResult) -> Any:
    """results.csv as a wandb.Table ("n/a" as empty cells)."""
    rows = result.rows()
    columns = list(rows[0]) if rows else ["trial", "architecture", "status"]
    data = [[None if r.get(c, NA) == NA else r[c] for c in columns] for r in rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)
