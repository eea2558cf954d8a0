"""Every file and directory sae_lab writes goes through here: atomic, umask-honouring, and never
over a directory that holds something else.

    atomic_write_bytes/text/json(path, ...)   temporary file beside `path`, fsync, os.replace
    atomic_file(path)                         the same for writers that want a path (safetensors)
    atomic_dir(directory, command)            fill a temporary directory, then swap it in
    check_output_dir(directory, command)      refuse a directory that is not an earlier output

A directory written by `atomic_dir` carries a small marker, `.sae_lab_output` (JSON naming the
command), so a later run knows it may replace it; a directory holding anything else (a thesis, a
sweep) is refused with a one-line error, never deleted.

Crash safety of `atomic_dir`: the temporary directory is `.NAME.PID.xxxx` beside NAME; a run
killed while filling it leaves it behind, and the next write to NAME removes every such directory
whose process is gone. Replacing swaps NAME -> .NAME.old, then the new one -> NAME; a crash
between the two renames leaves NAME missing and the previous copy in .NAME.old: the next run puts
it back (and says so) before anything else.

This module depends on nothing else in sae_lab.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MARKER = ".sae_lab_output"
# Directories named like mkdtemp's (".NAME.xxxxxxxx") without a pid, left by versions before
# this module, are removed only once they are this old (seconds), a live writer is never that slow
# to finish a single SAE or page, and only when they hold nothing but the command's own files.
LEGACY_TMP_AGE = 6 * 3600
# What `SAE.save` writes (the default writer of `atomic_dir`), plus the eval/ that `sae-lab eval`
# adds beside it: a directory holding only these is an earlier SAE and may be replaced.
SAE_FILES = ("cfg.json", "sae_weights.safetensors", "eval")


def umask() -> int:
    """The process umask (reading it means setting it; this puts it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the permissions a plain open()/mkdir() would."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~umask())


def _chmod_tree(root: Path) -> None:
    """Some writers create 0600 files whatever the umask (safetensors' save_file does): give
    everything under `root` the permissions of a plain open()/mkdir()."""
    for path in root.rglob("*"):
        if not path.is_symlink():
            _chmod_default(path, is_dir=path.is_dir())


# --- files ---------------------------------------------------------------------------------------


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write; it replaces `path` when the block succeeds and is
    removed when it raises."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        _chmod_default(tmp, is_dir=False)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# --- directories ---------------------------------------------------------------------------------


class OutputDirError(FileExistsError):
    """An output directory that is not an earlier output of the same command."""


def check_output_dir(directory: str | os.PathLike, command: str | None,
                     known: Iterable[str] = ()) -> None:
    """Raise OutputDirError unless `directory` may be replaced by `command`'s output.

    It may if it does not exist, is empty, carries the marker of `command`, or (outputs written
    before the marker existed) holds only names matching `known` (fnmatch patterns).
    """
    target = Path(directory)
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise OutputDirError(f"{target}: exists and is not a plain directory; choose another "
                             "output")
    names = {p.name for p in target.iterdir()}
    if not names:
        return
    owner = _marker_command(target)
    if owner is not None and owner == command:
        return
    if owner is None and _only(names, known):
        return
    what = f"an output of `{owner}`" if owner else "files sae_lab did not write"
    shown = ", ".join(sorted(names - {MARKER})[:3]) + (", ..." if len(names - {MARKER}) > 3 else "")
    raise OutputDirError(
        f"{target}: exists and holds {what} ({shown}); it would be replaced. Choose a new or "
        f"empty directory, or remove it first"
    )


def _only(names: Iterable[str], patterns: Iterable[str]) -> bool:
    patterns = tuple(patterns)
    return all(any(fnmatch.fnmatchcase(n, k) for k in patterns) for n in names)


def _marker_command(directory: Path) -> str | None:
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("command") if isinstance(data, dict) else None


@contextmanager
def atomic_dir(directory: str | os.PathLike, command: str | None = None,
               known: Iterable[str] = SAE_FILES, say: Callable[[str], None] | None = None
               ) -> Iterator[Path]:
    """A temporary directory beside `directory` to fill; it replaces `directory` when the block
    finishes and is deleted if the block raises, so nothing half-written looks complete.

    `command` names the writer (its marker goes into the directory); None is `SAE.save`, whose
    directories are known by their files (SAE_FILES) and get no marker. An existing `directory`
    that is not an earlier output of `command` (see check_output_dir) is refused before anything
    is written. Temporary directories of dead runs and a copy stranded in .NAME.old are dealt
    with first (see the module docstring).
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target, say, known)
    check_output_dir(target, command, known)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        _chmod_default(tmp, is_dir=True)
        if command is not None:
            (tmp / MARKER).write_text(json.dumps({"command": command}) + "\n")
        yield tmp
        _chmod_tree(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: Path, target: Path) -> None:
    """Move the finished directory `src` to `target`, replacing what was there."""
    if target.exists():
        old = _old(target)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)


def recover(directory: str | os.PathLike, say: Callable[[str], None] | None = None,
            known: Iterable[str] = SAE_FILES) -> list[Path]:
    """Clean up after interrupted `atomic_dir` writes to `directory`; returns what was removed.

    A copy in .NAME.old with NAME missing is moved back (a crash between the two renames); with
    NAME present it is stale and removed, as are .NAME.PID.* directories of processes that are
    gone, and .NAME.xxxxxxxx ones (older versions) once old and holding only `known` files.
    """
    say = say or _stderr
    target = Path(directory)
    removed: list[Path] = []
    old = _old(target)
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
        else:
            os.replace(old, target)
            say(f"note: {target} was missing after an interrupted write; restored the previous "
                f"copy from {old.name}")
    if not target.parent.is_dir():
        return removed
    pattern = re.compile(re.escape(f".{target.name}.") + r"(?:(\d+)\.)?[A-Za-z0-9_]{8}$")
    now = time.time()
    for p in target.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m is None or not p.is_dir() or p.is_symlink():
            continue
        if m.group(1) is not None:
            stale = not _alive(int(m.group(1)))
        else:
            stale = (now - p.stat().st_mtime > LEGACY_TMP_AGE
                     and _only((q.name for q in p.iterdir()), (MARKER, *known)))
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
