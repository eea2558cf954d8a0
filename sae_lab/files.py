"""Every file and directory sae_lab writes goes through here: atomic, umask-honouring, and never
over a directory that holds something else.

    atomic_write_bytes/text/json(path, ...)   temporary file beside `path`, fsync, os.replace
    atomic_file(path)                         the same for writers that want a path (safetensors)
    DiskFullError                             what they raise when the disk fills (ENOSPC, however
                                              the writer reports it), naming the path and space
    atomic_dir(directory, command)            fill a temporary directory, then swap it in
    check_output_dir(directory, command)      refuse a directory that is not an earlier output
    check_outside(directory, inputs)          refuse an output that is, or is inside, an input

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

import errno
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


# --- a full disk ---------------------------------------------------------------------------------


class DiskFullError(OSError):
    """No space left on the device: one line naming the path and the space needed."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC, however the writer reports it: an OSError, or a library's own error whose text
    (or cause) says so (safetensors: "No space left on device (os error 28)")."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or "os error 28" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(path: str | os.PathLike, needed: int | None = None,
                    remedy: str = "free some space and retry") -> DiskFullError:
    """The one-line error for a write of `needed` bytes (None: unknown) to `path` that found
    the disk full; it ends with `remedy`."""
    target = Path(path)
    try:
        free = shutil.disk_usage(_existing_parent(target)).free
    except OSError:
        free = None
    parts = [f"needs ~{_mb(needed)}" if needed else "", f"{_mb(free)} free" if free is not None
             else ""]
    detail = ", ".join(p for p in parts if p)
    return DiskFullError(errno.ENOSPC, f"no space left on device writing {target}"
                         + (f" ({detail})" if detail else "") + f"; {remedy}")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mb(n: int) -> str:
    if n < 1e6:
        return f"{max(1, round(n / 1e3))} kB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


# --- files ---------------------------------------------------------------------------------------


@contextmanager
def atomic_file(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """A temporary path beside `path` to write; it replaces `path` when the block succeeds and is
    removed when it raises. A full disk is a DiskFullError naming `path` and `needed` bytes (or
    what had been written when it filled)."""
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
    except BaseException as e:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise disk_full_error(target, needed or written) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_file(path, len(data)) as tmp, open(tmp, "wb") as f:
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


def check_outside(directory: str | os.PathLike,
                  inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise OutputDirError when `directory` is, or lies inside, one of `inputs` (None entries
    are skipped): the output would replace, or be written into, what is being read."""
    target = Path(directory).expanduser().resolve()
    for source in inputs:
        if source is None:
            continue
        src = Path(source).expanduser().resolve()
        if target == src or target.is_relative_to(src):
            where = "is" if target == src else "is inside"
            raise OutputDirError(f"{directory}: {where} the input {source}; writing there would "
                                 "change the input. Choose an output directory outside it")


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
               known: Iterable[str] = SAE_FILES, say: Callable[[str], None] | None = None,
               needed: int | None = None) -> Iterator[Path]:
    """A temporary directory beside `directory` to fill; it replaces `directory` when the block
    finishes and is deleted if the block raises, so nothing half-written looks complete.

    `command` names the writer (its marker goes into the directory); None is `SAE.save`, whose
    directories are known by their files (SAE_FILES) and get no marker. An existing `directory`
    that is not an earlier output of `command` (see check_output_dir) is refused before anything
    is written. Temporary directories of dead runs and a copy stranded in .NAME.old are dealt
    with first (see the module docstring). A full disk is a DiskFullError naming `directory`
    and `needed` bytes (None: what had been written when it filled).
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
    except BaseException as e:
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise disk_full_error(target, needed or written or None) from e
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


def jsonl_rows(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """(where, value) for each non-blank line of a JSON-lines file, `where` being "path:line";
    a line that is not JSON is a one-line ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None

