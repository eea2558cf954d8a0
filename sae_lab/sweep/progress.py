"""Progress of a running sweep for people: one line per trial event, printed by the sweep's
EventLog callback (sae_lab.sweep.run) as it records the event in events.jsonl.

    with progress.printing(out, n_trials):
        run_sweep(...)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WORDS = {"start": "started", "complete": "finished", "error": "FAILED", "retry": "retrying",
         "restore": "restored"}
FINISHING = ("complete", "error")


class TrialProgress:
    """Prints `0m12s  trial <id> finished  (3/8 finished)` for each event it is given."""

    def __init__(self, n_trials: int, finished: int = 0) -> None:
        self.n_trials, self.done, self.start = n_trials, finished, time.monotonic()

    def __call__(self, event: str, trial: str) -> None:
        self.done += event in FINISHING
        s = int(time.monotonic() - self.start)
        print(f"  {s // 60}m{s % 60:02d}s  trial {trial} {WORDS.get(event, event):<9} "
              f"({self.done}/{self.n_trials} finished)", flush=True)


def finished_trials(events: Path) -> int:
    """Trials an events.jsonl already records as finished (a resumed sweep counts them)."""
    if not events.is_file():
        return 0
    lines = [ln for ln in events.read_text().splitlines(keepends=True) if ln.endswith("\n")]
    return len({e["trial"] for e in map(json.loads, lines) if e["event"] in FINISHING})


# The printer of the sweep running in this process. A module global rather than an attribute of
# the callback: on --resume Tune rebuilds its callbacks from the experiment's pickle.
_printer: TrialProgress | None = None


@contextmanager
def printing(out: Path, n_trials: int) -> Iterator[None]:
    """Print a line per trial event of the sweep in `out` while the block runs."""
    global _printer
    _printer = TrialProgress(n_trials, finished_trials(out / "events.jsonl"))
    try:
        yield
    finally:
        _printer = None


def report(event: str, trial: str) -> None:
    if _printer is not None:
        _printer(event, trial)
