"""When to draw a progress bar."""

from __future__ import annotations

import sys
from typing import TextIO


def bar_wanted(stream: TextIO | None = None) -> bool:
    """A bar redraws itself with carriage returns, which in a file or a pipe (a Kaggle or SLURM
    log) is one line of thousands of redraws: draw one on a terminal or in a notebook only."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules
