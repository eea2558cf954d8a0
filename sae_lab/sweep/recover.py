"""Before `--resume`: point every trial at the newest complete checkpoint it has on disk.

Tune's experiment state names each trial's latest checkpoint, and is saved after the checkpoint
is registered. A driver killed in between (SIGKILL, a full disk) leaves a state naming a
checkpoint that Tune has already deleted (num_to_keep) or that was only partly written; Tune
would then fail the trial ("does not exist on storage anymore", or EOFError unpickling an empty
trainer.ckpt). `repair_checkpoints` rewrites the state so that each unfinished trial resumes from
its newest complete checkpoint_NNNNNN (or starts over when it has none). Repeated reports are
harmless: a pack's rungs answer a report they have seen with the answer they gave.

This reads and writes Tune's own state files through Ray's (private) classes, so it is kept
here, apart from the rest of the sweep code.
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from sae_lab.files import atomic_write_text

STATE_GLOB = "experiment_state-*.json"


def complete_checkpoint(directory: Path) -> bool:
    """Whether every file of a trial checkpoint was written whole: none empty, JSON files
    parse, Lightning checkpoints (zip archives) have their central directory, safetensors files
    are as long as their header says."""
    if not directory.is_dir():
        return False
    files = [p for p in directory.rglob("*") if p.is_file()]
    return bool(files) and all(_whole(p) for p in files)


def _whole(path: Path) -> bool:
    try:
        if path.stat().st_size == 0:
            return False
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".ckpt":
            with zipfile.ZipFile(path) as z:
                z.infolist()
        elif path.suffix == ".safetensors":
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
            return 8 + n <= path.stat().st_size
    except (OSError, ValueError, zipfile.BadZipFile, struct.error):
        return False
    return True


def newest_complete(trial_dir: Path) -> Path | None:
    """The trial's checkpoint_NNNNNN with the highest number that is complete."""
    found = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name, reverse=True)
    return next((p for p in found if complete_checkpoint(p)), None)


def repair_checkpoints(exp_dir: Path, say: Callable[[str], None] = print) -> list[str]:
    """Rewrite the newest experiment state in `exp_dir` so that no unfinished trial names a
    missing or partial checkpoint; returns a line per trial changed (also passed to `say`)."""
    states = sorted(exp_dir.glob(STATE_GLOB))
    if not states:
        return []
    path = states[-1]
    state = json.loads(path.read_text())
    changed = []
    for entry in state.get("trial_data", []):
        line = _repair_trial(entry, exp_dir)
        if line:
            changed.append(line)
            say(line)
    if changed:
        atomic_write_text(path, json.dumps(state))
    return changed


def _repair_trial(entry: list[str], exp_dir: Path) -> str | None:
    """Fix one [trial json, run metadata json] pair of the state in place; a line saying what
    was done, or None when the trial is finished or its checkpoint is whole."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = json.loads(entry[0])
    if trial.get("status") in ("TERMINATED", "ERROR"):
        return None
    meta = _TrainingRunMetadata.from_json_state(entry[1])
    manager = meta.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager else None
    if latest is None:
        return None
    named = Path(latest.checkpoint.path)
    trial_dir = exp_dir / named.parent.name
    if complete_checkpoint(trial_dir / named.name):
        return None
    best = newest_complete(trial_dir)
    if best is None:
        manager._latest_checkpoint_result = None
        manager._checkpoint_results = []
        what = "starts over (no complete checkpoint left)"
    else:
        result = _TrainingResult(checkpoint=Checkpoint(str(best)), metrics=latest.metrics)
        manager._latest_checkpoint_result = result
        manager._checkpoint_results = [result]
        what = f"resumes from {best.name}"
    meta.checkpoint_manager = manager  # marks the cached JSON stale
    entry[1] = meta.get_json_state()
    return f"{trial_dir.name}: {named.name} is missing or incomplete; {what}"
