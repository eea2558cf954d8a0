"""Where the training stream stands, kept in checkpoints so that a resumed run sees the batches an
uninterrupted one would have seen, in the same order.

Lightning saves a DataModule's `state_dict()` in every checkpoint and calls `load_state_dict()`
before it asks for the training dataloader; the streams then replay from their start and drop the
batches already trained on (reading, not training: cheap next to the steps it stands for).
"""

from __future__ import annotations

from typing import Any


class StreamPosition:
    """DataModule mixin: counts the training batches handed to the model."""

    position: int = 0
    """Training batches consumed so far (skipped NaN batches included)."""

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": int(self.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state.get("train_batches", 0))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Called by Lightning for each batch just before its step, never for prefetched ones.
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            self.position += 1
        return batch


def worker_resume(position: int, worker: int, workers: int) -> tuple[int, int]:
    """(role, batches to skip) of dataloader worker `worker` when a stream restarts at `position`.

    A DataLoader takes batches from its workers in turn, starting with worker 0, so global batch g
    came from worker g % W as its (g // W)-th batch. After a restart, worker w's k-th batch is
    global batch position + k*W + w: it must play worker (position + w) % W and skip
    (position + w) // W batches.
    """
    g = position + worker
    return g % workers, g // workers
