"""Weights & Biases runs that a resume continues: each run id is kept in a file by its outputs.

    train()        Lightning's WandbLogger (run.py), its id in OUT_DIR/wandb_run_id
    train_pack()   one run per member, opened here (one process holds several at once:
                   wandb's reinit="create_new"), its id in members/<name>/wandb_run_id
    a sweep        one summary run in the sweep's group: its Pareto plot and results table

wandb is an optional extra: it is imported only when a config lists it in `loggers`.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sae_lab.files import atomic_write_text
from sae_lab.training.config import WandbConfig

WANDB_ID_FILE = "wandb_run_id"
STEP_KEY = "trainer/global_step"
"""The x-axis of every curve, as Lightning's WandbLogger names it (train and pack runs alike)."""


def need_wandb() -> Any:
    """The wandb module, or a one-line error saying how to install it."""
    try:
        import wandb
    except ImportError:
        raise ValueError("loggers: wandb needs the wandb package (pip install "
                         "'sae-lab[wandb]')") from None
    return wandb


def run_id(out_dir: Path, given: str | None = None) -> str:
    """The W&B run id of the run writing to `out_dir`: `given` (e.g. kept in a sweep's
    checkpoint), else the one kept in out_dir/wandb_run_id, else a new one; kept there."""
    id_file = out_dir / WANDB_ID_FILE
    if not given and id_file.is_file():
        given = id_file.read_text().strip()
    rid = given or uuid.uuid4().hex[:8]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(id_file, rid + "\n")
    return rid


def open_run(w: WandbConfig, out_dir: Path, config: dict[str, Any], name: str | None = None,
             job_type: str | None = None, given_id: str | None = None) -> Any:
    """A W&B run (continued when its id was kept) writing under out_dir/wandb; its curves are
    plotted against STEP_KEY."""
    wandb = need_wandb()
    run = wandb.init(project=w.project, entity=w.entity, group=w.group, tags=list(w.tags),
                     name=name, job_type=job_type, id=run_id(out_dir, given_id),
                     resume="allow", dir=str(out_dir), config=config, reinit="create_new")
    run.define_metric(STEP_KEY)
    run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
    return run


def log_to_run(run: Any, metrics: dict[str, Any], step: int) -> None:
    run.log({**{k: float(v) for k, v in metrics.items()}, STEP_KEY: step})


def finish_run(run: Any, final: dict[str, Any] | None = None, failed: bool = False) -> None:
    """Put `final` in the run's summary as final/<key> and finish it (its files complete)."""
    if final:
        run.summary.update({f"final/{k}": v for k, v in final.items()})
    run.finish(exit_code=1 if failed else 0)
