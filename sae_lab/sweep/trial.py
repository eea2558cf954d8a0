"""What every Tune trainable of a sweep shares (one SAE per trial in run.py, packs in packs.py)."""

from __future__ import annotations

import logging
import warnings


def quiet_trial() -> None:
    """Per-trial banners (Lightning's "GPU available", tips; a line per checkpoint) from every
    trial would drown Tune's status table."""
    for name in ("pytorch_lightning", "lightning_fabric", "ray.train._internal.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


class TrialError(RuntimeError):
    """A trial's training failed (NaN, out of memory, ...); names the error and the node."""
