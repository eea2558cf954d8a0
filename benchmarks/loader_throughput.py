"""Rows/s of the streaming shard reader next to TopK training tokens/s, measured in the same run.

    python benchmarks/loader_throughput.py                  # 240k rows, d_in=384, float16
    python benchmarks/loader_throughput.py --workers 0 1 2 --train-steps 8

Writes a shard set of random float16 rows (d_in=384) to a temporary directory, then
  - reader: ShardDataModule.train_dataloader() with the row-shuffle buffer on (65,536 rows),
    batches of 4096 float32 rows, for each --workers value; rows/s over --read-batches batches;
  - training: sae_lab's TopK SAE (d_sae=6144, k=32, batch 4096) through the Lightning path
    (SAEModule + Trainer) fed by the same reader; steady-state steps timed by a callback,
    data loading excluded.
Target: the reader delivers >= 5x what training consumes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch

from sae_lab.data.datamodule import ShardDataModule
from sae_lab.data.shards import ShardSetWriter
from sae_lab.sae import sae_config
from sae_lab.training.config import DataConfig, TrainConfig
from sae_lab.training.run import build_module, first_batch

D_IN, BATCH = 384, 4096


def write_shards(directory: str, n_rows: int, shard_rows: int) -> None:
    w = ShardSetWriter(directory, {"model": "random"}, "float16", shard_rows, 4096)
    g = torch.Generator().manual_seed(0)
    for start in range(0, n_rows, 16384):
        n = min(16384, n_rows - start)
        w.add(start, torch.randn(n, D_IN, generator=g), torch.zeros(n, dtype=torch.int32),
              torch.zeros(n, dtype=torch.long), torch.arange(n, dtype=torch.int32))
    w.finish()


def reader_rows_per_s(directory: str, workers: int, batches: int, buffer: int) -> float:
    data = DataConfig(shards=directory, val_shards=1, shuffle_buffer=buffer, num_workers=workers)
    it = iter(ShardDataModule(data, BATCH, seed=0).train_dataloader())
    next(it)  # start-up: workers, the first shards, the buffer fill
    t = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    dt = time.perf_counter() - t
    assert batch.shape == (BATCH, D_IN) and batch.dtype == torch.float32
    return batches * BATCH / dt


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self.t)


def training_tokens_per_s(directory: str, steps: int, buffer: int) -> float:
    cfg = TrainConfig(sae=sae_config("topk", d_sae=6144, k=32),
                      data=DataConfig(shards=directory, shuffle_buffer=buffer),
                      batch_size=BATCH, max_tokens=BATCH * steps, progress_bar=False)
    dm = ShardDataModule(cfg.data, BATCH, seed=0)
    module = build_module(cfg, dm)
    module.initialise(first_batch(dm))
    timer = StepTimer()
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return BATCH / statistics.median(timer.times[1:])  # the first step warms up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=240_000)
    ap.add_argument("--shard-rows", type=int, default=32_768)
    ap.add_argument("--buffer", type=int, default=65_536)
    ap.add_argument("--read-batches", type=int, default=100)
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(tmp, args.rows, args.shard_rows)
        train = training_tokens_per_s(tmp, args.train_steps, args.buffer)
        reads = {w: reader_rows_per_s(tmp, w, args.read_batches, args.buffer)
                 for w in args.workers}
    print(f"d_in={D_IN} float16 shards, batch {BATCH}, shuffle buffer {args.buffer} rows, "
          f"{torch.get_num_threads()} torch threads")
    print(f"  TopK training (d_sae=6144, k=32, Lightning): {train:10.0f} tokens/s")
    for w, r in reads.items():
        print(f"  reader, {w} worker(s):                      {r:10.0f} rows/s  "
              f"= {r / train:.1f}x training (target >= 5x)")


if __name__ == "__main__":
    main()
