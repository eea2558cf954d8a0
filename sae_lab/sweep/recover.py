"""Before `--resume`: point every trial at the newest complete checkpoint it has on disk.

Tune's experiment state names each trial's latest checkpoint, and is saved after the checkpoint
is registered. A driver killed in between (SIGKILL, a full disk) leaves a state naming a
checkpoint that Tune has already deleted (num_to_keep) or that was only partly written; Tune
would then fail the trial ("does not exist on storage anymore", or EOFError unpickling an empty
trainer.ckpt). `repair_checkpoints` rewrites the state so that each unfinished trial resumes from
its newest complete checkpoint_NNNNNN (or starts over when it has none). Repeated reports are
harmless: a pack's rungs answer a report they have seen with the answer they gave.

A full disk leaves empty or truncated files behind (Tune's error.pkl and params.pkl, a
checkpoint's trainer.ckpt): `repair_trials` removes them, so that no loader finds half a file,
then repairs the state as above. Pickles are checked by walking their opcodes (pickletools), which
never runs what they hold.

This reads and writes Tune's own state files through Ray's (private) classes, so it is kept
here, apart from the rest of the sweep code.
"""

from __future__ import annotations

import json
import pickletools
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from sae_lab.files import atomic_write_text

STATE_GLOB = "experiment_state-*.json"
TUNER_FILE = "tuner.pkl"
SEARCH_STATE_GLOBS = ("basic-variant-state-*.json", "search_gen_state-*.json", "searcher-state-*")
"""The search algorithm's state beside the experiment state (pickles, whatever their suffix)."""
EMPTY_IS_BROKEN = (".json", ".yaml", ".csv", ".ckpt", ".safetensors")
"""Files of a trial that are never rightly empty (Tune's error.txt and storage marker may be)."""
NO_SPACE = ("No space left on device", "Errno 28", "os error 28")


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


def whole_pickle(path: Path) -> bool:
    """Whether `path` holds a pickle that ends where it should (its STOP opcode); walks the
    opcodes without building anything."""
    try:
        data = path.read_bytes()
        ops = list(pickletools.genops(data))
    except (OSError, ValueError, EOFError):
        return False
    return bool(ops) and ops[-1][0].name == "STOP"


def remove_partial_files(exp_dir: Path, say: Callable[[str], None] = print) -> list[Path]:
    """Remove from every trial directory what a full disk left half-written: checkpoint_NNNNNN
    directories that are not complete, and empty or truncated pickles (error.pkl, whose text
    twin error.txt Tune reads instead; params.pkl, the twin of params.json)."""
    removed = []
    for trial_dir in (p for p in exp_dir.iterdir() if p.is_dir()) if exp_dir.is_dir() else ():
        for ckpt in trial_dir.glob("checkpoint_*"):
            if ckpt.is_dir() and not complete_checkpoint(ckpt):
                shutil.rmtree(ckpt, ignore_errors=True)
                removed.append(ckpt)
        for pkl in trial_dir.glob("*.pkl"):
            if not whole_pickle(pkl):
                pkl.unlink(missing_ok=True)
                removed.append(pkl)
        for f in trial_dir.rglob("*"):  # config.yaml, result.json, hparams.yaml ... left empty
            if f.suffix in EMPTY_IS_BROKEN and f.is_file() and f.stat().st_size == 0:
                f.unlink(missing_ok=True)
                removed.append(f)
    for path in removed:
        say(f"removed {path.relative_to(exp_dir)}: written only in part (a full disk?)")
    return removed


def set_aside_search_state(exp_dir: Path, say: Callable[[str], None] = print) -> list[Path]:
    """Tune copies its driver's files to the sweep folder in the background: a driver killed
    mid-copy leaves the search algorithm's state cut short, and Tune, failing to unpickle it,
    would start the whole experiment again. A cut file is set aside (*.partial) so that Tune
    reads the newest whole one; with none left, say what Tune will do."""
    moved = []
    for pattern in SEARCH_STATE_GLOBS:
        found = sorted(p for p in exp_dir.glob(pattern) if not p.name.endswith(".partial"))
        cut = [p for p in found if not whole_pickle(p)]
        for path in cut:
            path.replace(path.with_name(path.name + ".partial"))
            moved.append(path)
            say(f"{path.name} was cut short (the driver was killed while Ray copied it); "
                "set aside as .partial")
        if cut and len(cut) == len(found):
            say(f"warning: no whole {pattern} is left: Tune will start the sweep's trials "
                "again from the beginning (their earlier folders are kept)")
    return moved


def repair_trials(exp_dir: Path, say: Callable[[str], None] = print) -> list[str]:
    """Before --resume: remove_partial_files, set_aside_search_state, then
    repair_checkpoints."""
    remove_partial_files(exp_dir, say)
    set_aside_search_state(exp_dir, say)
    return repair_checkpoints(exp_dir, say)


def newest_complete(trial_dir: Path) -> Path | None:
    """The trial's checkpoint_NNNNNN with the highest number that is complete."""
    found = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: p.name, reverse=True)
    return next((p for p in found if complete_checkpoint(p)), None)


def repair_checkpoints(exp_dir: Path, say: Callable[[str], None] = print) -> list[str]:
    """Rewrite the newest experiment state in `exp_dir` so that no unfinished trial names a
    missing or partial checkpoint; returns a line per trial changed (also passed to `say`)."""
    state, path = None, None
    for path in sorted(exp_dir.glob(STATE_GLOB), reverse=True):
        try:
            state = json.loads(path.read_text())
            break
        except (OSError, ValueError):  # cut short: Tune falls back to the one before
            path.rename(path.with_name(path.name + ".partial"))
            say(f"{path.name} was written only in part (a full disk?); set aside as "
                f"{path.name}.partial")
            state = None
    if state is None or path is None:
        return []
    changed = []
    for entry in state.get("trial_data", []):
        revived = _revive_disk_full(entry, exp_dir)
        if revived:
            changed.append(revived)
            say(revived)
        line = _repair_trial(entry, exp_dir)
        if line:
            changed.append(line)
            say(line)
    if changed:
        atomic_write_text(path, json.dumps(state))
    return changed


def _repair_trial(entry: list[str], exp_dir: Path) -> str | None:
    """Fix one [trial json, run metadata json] pair of the state in place, and the trial's
    checkpoint directories on disk; a line saying what was done, or None when nothing was.

    Tune numbers the trial's next checkpoint after the one its state names, so a newer one on
    disk would be written over (and, num_to_keep 1, deleted as the "previous" one): the newest
    complete checkpoint takes the name the state gives, and any other newer one is removed."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = json.loads(entry[0])
    if trial.get("status") in ("TERMINATED", "ERROR") or not trial.get("relative_logdir"):
        return None
    trial_dir = exp_dir / trial["relative_logdir"]
    meta = _TrainingRunMetadata.from_json_state(entry[1])
    manager = meta.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager else None
    named = trial_dir / Path(latest.checkpoint.path).name if latest is not None else None
    index = _index(named) if named is not None else -1
    newer = [c for c in trial_dir.glob("checkpoint_*") if c.is_dir() and _index(c) > index]
    best = newest_complete(trial_dir)
    if named is not None and best is not None and best != named and \
            (_index(best) > index or not complete_checkpoint(named)):
        shutil.rmtree(named, ignore_errors=True)
        best.rename(named)
        what = f"resumes from the newest complete one, {best.name} (renamed {named.name})"
    elif named is not None and not complete_checkpoint(named):
        manager._latest_checkpoint_result = None
        manager._checkpoint_results = []
        meta.checkpoint_manager = manager  # marks the cached JSON stale
        entry[1] = meta.get_json_state()
        what = "starts over (no complete checkpoint left)"
    else:
        what = ""
    for c in newer:
        if c.exists() and c != named:
            shutil.rmtree(c, ignore_errors=True)
    if not what:
        return (f"{trial_dir.name}: {', '.join(c.name for c in newer)} not in the saved state; "
                f"removed") if newer else None
    return f"{trial_dir.name}: {named.name} is missing or incomplete, or not the newest; {what}"


def _revive_disk_full(entry: list[str], exp_dir: Path) -> str | None:
    """A trial that failed because the disk was full (its error.txt says so, or could not be
    written at all) did nothing wrong: make it unfinished again, to be resumed."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = json.loads(entry[0])
    if trial.get("status") != "ERROR" or not trial.get("relative_logdir"):
        return None
    error = exp_dir / trial["relative_logdir"] / "error.txt"
    try:
        text = error.read_text(errors="replace")
    except OSError:
        text = ""
    # Tune writes error.pkl beside error.txt; one that is gone was cut short by a full disk and
    # removed (remove_partial_files), and then error.txt may be cut short too.
    cut_short = not (error.parent / "error.pkl").is_file()
    if text.strip() and not any(s in text for s in NO_SPACE) and not cut_short:
        return None
    trial["status"] = "PAUSED"
    entry[0] = json.dumps(trial, indent=2)
    meta = _TrainingRunMetadata.from_json_state(entry[1])
    meta.error_filename = meta.pickled_error_filename = None
    meta.invalidate_cache()
    entry[1] = meta.get_json_state()
    error.unlink(missing_ok=True)
    return f"{trial['relative_logdir']}: failed for want of disk space; resumed"


def _index(checkpoint: Path) -> int:
    try:
        return int(checkpoint.name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1
