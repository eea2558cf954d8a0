"""The sweep's output directory: whose it is, which sweep it holds, and whether its Tune state may
be unpickled.

    check_out_dir(out, spec)        before anything runs: refuse a folder of someone else's files
    spec_changes(recorded, now)     "base.lr: 0.003 -> 0.001" for each field a resume changed
    record_state(out)               after Tune writes tune/tuner.pkl: its sha256 in the marker
    check_state(out, trust, say)    before Tune unpickles it: same file, same owner, or refuse

The marker is files.MARKER (`.sae_lab_output`, JSON) with command "sweep" and `tuner_sha256`.
Folders written before the marker existed are recognised by a full sweep.yaml dump beside only
names a sweep writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sae_lab.config import ConfigError
from sae_lab.files import MARKER, atomic_write_json, check_output_dir

COMMAND = "sweep"
SPEC_FILE = "sweep.yaml"
TUNER_PKL = "tune/tuner.pkl"
# What a sweep writes under its output directory (atomic writes' temporaries start with ".").
WRITTEN = (SPEC_FILE, MARKER, "tune", "results.csv", "pareto.png", "pareto_*.png", "best",
           "bench", "events.jsonl", "rungs.jsonl", "wandb", "wandb_run_id", ".*")
TRUST_FLAG = "trust_state=True (sae-lab sweep --trust-state)"


class SweepStateError(ConfigError):
    """--resume would unpickle a Tune state this sweep cannot vouch for."""


def check_out_dir(out: Path, spec: dict[str, Any]) -> None:
    """Refuse (OutputDirError, one line) an output folder holding files no sweep wrote, before
    anything runs; a folder of an earlier sweep (its marker, or a sweep.yaml dump) is accepted.
    best/, replaced at the end, is checked now too."""
    legacy = _marker(out) is None and _is_spec_dump(out / SPEC_FILE, spec)
    check_output_dir(out, COMMAND, known=WRITTEN if legacy else ())
    if out.is_dir():
        from sae_lab.sae.registry import ARCHITECTURES

        check_output_dir(out / "best", "sweep best",
                         known=("summary.json", "frontier_*", *ARCHITECTURES))


def _is_spec_dump(path: Path, spec: dict[str, Any]) -> bool:
    """A sweep.yaml as sae_lab writes it (every field of the sweep), not a user's own YAML."""
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(d, dict) and set(d) == set(spec)


def mark(out: Path) -> None:
    """Claim `out` for the sweep (keeps a recorded tuner hash)."""
    data = _marker(out) or {}
    if data.get("command") != COMMAND:
        data = {"command": COMMAND}
    atomic_write_json(out / MARKER, data)


def _marker(out: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def spec_changes(recorded: Any, now: dict[str, Any]) -> list[str]:
    """`key: before -> now` for each dotted field that differs."""
    before = _flat(recorded) if isinstance(recorded, dict) else {}
    after = _flat(now)
    return [f"{k}: {before.get(k, '(unset)')!r} -> {after.get(k, '(unset)')!r}"
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def refuse_changed(out: Path, spec: dict[str, Any], what: str) -> None:
    """Raise ConfigError naming every field in which `spec` differs from OUT/sweep.yaml."""
    path = out / SPEC_FILE
    if not path.is_file():
        return
    try:
        recorded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        recorded = None
    changes = spec_changes(recorded, spec)
    if changes:
        shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6
                                          else "")
        raise ConfigError(f"{what}: the sweep differs from the one recorded in {path} ({shown}); "
                          f"run it with the same YAML and overrides, or choose another --out")


# --- the Tune state that --resume unpickles ------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_state(out: Path, **extra: Any) -> None:
    """Note the sha256 of the tuner.pkl this process's Tuner just wrote (Tune writes it once,
    when the sweep starts; a restore reads it and leaves it as it is). `extra`: more to note
    about it (explicit_loggers: its run config lists Tune's loggers)."""
    pkl = out / TUNER_PKL
    if pkl.is_file():
        atomic_write_json(out / MARKER, {**(_marker(out) or {}), "command": COMMAND,
                                         "tuner_sha256": _sha256(pkl), **extra})


def explicit_loggers(out: Path) -> bool:
    """Whether the sweep's tuner.pkl was written with Tune's loggers listed (record_state)."""
    return bool((_marker(out) or {}).get("explicit_loggers"))


def state_problems(out: Path) -> list[str]:
    """Why OUT/tune/tuner.pkl may not be this sweep's own (empty: it is)."""
    pkl = out / TUNER_PKL
    problems = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for path in (out, pkl):
        owner = path.stat().st_uid
        if uid is not None and owner != uid:
            problems.append(f"{path} belongs to {_user(owner)}, not to you ({_user(uid)})")
            break
    recorded = (_marker(out) or {}).get("tuner_sha256")
    if recorded is None:
        problems.append(f"{pkl} was not recorded by a sweep (no tuner_sha256 in {out / MARKER})")
    elif recorded != _sha256(pkl):
        problems.append(f"{pkl} changed since the sweep wrote it (its sha256 differs from the "
                        f"one in {out / MARKER})")
    return problems


def check_state(out: Path, trust: bool = False, say: Callable[[str], None] = print) -> None:
    """Before Tune unpickles OUT/tune/tuner.pkl: refuse (one line) a file another user owns or
    this sweep did not write, unless `trust`; then only warn (and vouch for it from now on)."""
    problems = state_problems(out)
    if not problems:
        return
    if not trust:
        raise SweepStateError(f"--resume: {problems[0]}; resuming unpickles it, and a crafted "
                              f"file runs code. If you trust it, resume with {TRUST_FLAG}")
    say(f"warning: resuming although {'; '.join(problems)} (trusted on request)")
    record_state(out)


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"
