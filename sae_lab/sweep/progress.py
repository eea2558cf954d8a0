"""Progress of a running sweep for people: one line per trial event, read from the sweep's
events.jsonl (written by sae_lab.sweep.run.EventLog) while Tune itself runs quietly."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class TrialProgress:
    """Prints one line per trial event from the sweep's events.jsonl (written by the sweep's
    EventLog) while Tune runs quietly: `with TrialProgress(out, n_trials): run_sweep(...)`."""

    WORDS = {"start": "started", "complete": "finished", "error": "FAILED",
             "retry": "retrying", "restore": "restored"}

    def __init__(self, out: Path, n_trials: int, every_s: float = 1.0) -> None:
        self.path, self.n_trials, self.every_s = out / "events.jsonl", n_trials, every_s
        old = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
        old = [ln for ln in old if ln.endswith("\n")]
        self.offset = sum(len(ln.encode()) for ln in old)
        # a resumed sweep: trials that finished before it was interrupted count as finished
        self.done = len({e["trial"] for e in map(json.loads, old)
                         if e["event"] in ("complete", "error")})
        self.start = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TrialProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self._poll()

    def _poll(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.readlines()
        complete = [ln for ln in lines if ln.endswith("\n")]
        self.offset += sum(len(ln.encode()) for ln in complete)
        for line in complete:
            event = json.loads(line)
            self.done += event["event"] in ("complete", "error")
            s = int(time.monotonic() - self.start)
            word = self.WORDS.get(event["event"], event["event"])
            print(f"  {s // 60}m{s % 60:02d}s  trial {event['trial']} {word:<9} "
                  f"({self.done}/{self.n_trials} finished)", flush=True)
