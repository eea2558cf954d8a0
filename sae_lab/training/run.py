"""`train(config)`: data -> SAE -> Lightning Trainer -> the trained SAE and its metrics."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from sae_lab.config import load_yaml
from sae_lab.data.arrays import ArrayDataModule
from sae_lab.data.datamodule import ShardDataModule
from sae_lab.data.live import LiveDataModule
from sae_lab.data.synthetic import make_features, sample
from sae_lab.files import atomic_write_json, atomic_write_text
from sae_lab.lm.load import resolve_device
from sae_lab.sae import ARCHITECTURES
from sae_lab.sae.base import SAE
from sae_lab.training.checkpoint_io import AtomicCheckpointIO
from sae_lab.training.config import ConfigError, TrainConfig
from sae_lab.training.metrics import DEAD_FRAC, ReconStats, stream_stats
from sae_lab.training.module import SAEModule, finite_rows
from sae_lab.training.precision import trainer_precision
from sae_lab.training.wandb_runs import need_wandb, run_id

# Lightning's advice on dataloader workers and logging intervals is noise for streaming batches.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
warnings.filterwarnings("ignore", ".*IterableDataset.*has `__len__` defined.*")
# 16-mixed: the gradient scaler skips the first steps while it lowers its scale to fit float16;
# the learning-rate schedule still advances, as it would for a run without a scaler.
warnings.filterwarnings("ignore", ".*lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`.*")
# --resume continues in the run's own checkpoint directory, which is therefore not empty.
warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")

# Manifest fields that travel with the SAE so eval/inspect/steer/export know where it came from.
MANIFEST_KEYS = ("model", "revision", "layer", "hook", "hook_name", "ctx_len", "tokenizer",
                 "dtype", "model_family", "d_in", "model_dtype", "quantize", "device_map")


class TrainResult(NamedTuple):
    sae: SAE
    """The trained SAE, on CPU, acting on raw (unnormalised) activations."""
    metrics: dict[str, float]
    """Final metrics on the whole held-out set: fvu, mse, cos, l0, l1, val_tokens (rows used),
    skipped_val_rows; and dead_frac, tokens (trained on), skipped_batches."""
    out_dir: Path
    """Run directory; the SAE is saved in out_dir / 'final'."""
    held_out: str = ""
    """Which rows the final metrics come from, e.g. "all 4096 rows of held-out shard(s) [...]"."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after a whole step; the state was saved to continue."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        saved = f"; state saved in {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted at step {step}{saved}")
        self.step, self.checkpoint = step, checkpoint


class RunDirError(ValueError):
    """The run directory does not fit the request (exists without --resume, differs, ...)."""


# Keys of config.yaml that may change when a run is resumed: how long, how it is watched, where
# it runs. Anything else would make the resumed run a different experiment.
RESUMABLE_CHANGES = ("max_tokens", "val_every_steps", "val_batches", "log_every_steps",
                     "progress_bar", "device")


def make_datamodule(cfg: TrainConfig) -> pl.LightningDataModule:
    data = cfg.data
    if data.synthetic is not None:
        syn = data.synthetic
        truth = make_features(syn)
        n_val = max(cfg.batch_size, int(syn.n_tokens * data.val_fraction))
        train = sample(syn, truth, syn.n_tokens, seed=syn.seed + 1)
        val = sample(syn, truth, n_val, seed=syn.seed + 2)
        return ArrayDataModule(train, val, cfg.batch_size, cfg.seed, {"source": "synthetic"})
    if data.npy is not None:
        return ArrayDataModule.from_npy(data.npy, data.val_fraction, cfg.batch_size, cfg.seed)
    if data.live is not None:
        return LiveDataModule(data, cfg.batch_size, cfg.seed)
    return ShardDataModule(data, cfg.batch_size, cfg.seed)


def _metadata(dm: pl.LightningDataModule) -> dict[str, Any]:
    manifest = getattr(dm, "manifest", None)
    if manifest is None:
        return dict(getattr(dm, "metadata", {}))
    meta = {k: manifest[k] for k in MANIFEST_KEYS if k in manifest}
    meta["source"] = manifest.get("source") or (str(dm.data.shards) if hasattr(dm, "data")
                                                 else None)
    return meta


def _accelerator(cfg: TrainConfig) -> str:
    """Lightning's name for the device cfg.device resolves to."""
    return "gpu" if resolve_device(cfg.device).startswith("cuda") else "cpu"


def build_module(cfg: TrainConfig, dm: pl.LightningDataModule) -> SAEModule:
    torch.manual_seed(cfg.seed)
    sae_cfg = cfg.sae.with_d_in(dm.d_in)
    sae = ARCHITECTURES[sae_cfg.architecture](sae_cfg, metadata=_metadata(dm))
    return SAEModule(sae, cfg)


def first_batch(dm: pl.LightningDataModule) -> torch.Tensor:
    return next(iter(dm.train_dataloader()))


def quiet_lightning() -> None:
    """Keep Lightning's per-run banners (GPU/TPU availability, the litlogger tip) and torch's
    `_pytree` deprecation warning out of the output; warnings and errors still show."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def resume_point(cfg: TrainConfig, resume: bool,
                 say: Callable[[str], None] | None = None) -> Path | None:
    """The checkpoint to continue from (None: a fresh run), after checking the run directory.

    Without `resume`, a directory that already holds a run is refused (re-running would mix two
    runs' checkpoints and logs). With it, the saved config.yaml must match `cfg` except for
    RESUMABLE_CHANGES. A run that stopped before its first checkpoint (no checkpoints/*.ckpt, no
    final/) holds nothing to keep or continue: it is taken over, with or without `resume`, and
    `say` (default: stderr) is told so. Reads only; nothing is written.
    """
    out = Path(cfg.out_dir)
    saved, ckpt = out / "config.yaml", out / "checkpoints" / "last.ckpt"
    started = saved.is_file() or (out / "checkpoints").exists() or (out / "final").exists()
    if not started:
        return None
    if not _holds_checkpoint(out):
        (say or _stderr)(f"taking over {out}: it holds no checkpoint")
        return None
    if not resume:
        raise RunDirError(f"{out} already holds a run; continue it with --resume, or choose "
                          "another out_dir (--set out_dir=...)")
    if not ckpt.is_file():
        raise RunDirError(f"--resume: {out} has no checkpoints/last.ckpt to continue from; "
                          "remove the directory or choose another out_dir")
    if saved.is_file():
        before = _flat(saved_config(saved).to_dict())
        now = _flat(cfg.to_dict())
        diffs = [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
                 if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES]
        if diffs:
            raise RunDirError(f"--resume: the config differs from the run in {saved} ("
                              f"{'; '.join(diffs)}); resume with the same config")
    return ckpt


def _holds_checkpoint(out: Path) -> bool:
    """A finished SAE (final/) or any Lightning checkpoint: something a rerun must not bury."""
    return (out / "final").exists() or any((out / "checkpoints").glob("*.ckpt"))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def saved_config(path: Path) -> TrainConfig:
    """A run's config.yaml (a full dump): one written before sae.token_norm existed was trained
    without it, whatever today's default."""
    d = load_yaml(path.read_text(), str(path)) or {}
    if isinstance(d, dict) and isinstance(d.get("sae"), dict):
        d["sae"].setdefault("token_norm", False)
    return TrainConfig.from_dict(d, str(path))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_checkpoint(path: Path, d_in: int, key: str = "sae.W_enc") -> None:
    """Refuse, in one line, a checkpoint that cannot be loaded safely (weights only) or that was
    trained on activations of another width (`key`: an encoder weight in its state_dict)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        w_enc = ckpt["state_dict"][key]
    except FileNotFoundError:
        raise
    except Exception as e:  # unpickling refused, truncated file, not a Lightning checkpoint
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunDirError(f"checkpoint {path} cannot be resumed: not a safe sae_lab "
                          f"checkpoint ({type(e).__name__}: {first})") from e
    if w_enc.shape[0] != d_in:
        raise RunDirError(f"--resume: checkpoint {path} was trained on d_in={w_enc.shape[0]} "
                          f"but the data has d_in={d_in}; resume with the same data")


def _loggers(cfg: TrainConfig, out_dir: Path) -> list[Any]:
    """The Lightning loggers `cfg.loggers` names."""
    loggers: list[Any] = []
    if "tensorboard" in cfg.loggers:
        loggers.append(TensorBoardLogger(out_dir, name="tensorboard", version=""))
    if "wandb" in cfg.loggers:
        loggers.append(_wandb_logger(cfg, out_dir))
    return loggers


def _wandb_logger(cfg: TrainConfig, out_dir: Path) -> Any:
    """Lightning's WandbLogger; the run id is kept in out_dir so that --resume continues it."""
    need_wandb()
    from pytorch_lightning.loggers import WandbLogger

    w = cfg.wandb
    return WandbLogger(project=w.project, entity=w.entity, group=w.group, tags=list(w.tags),
                       id=run_id(out_dir), resume="allow", save_dir=str(out_dir),
                       config=cfg.to_dict())


def _end_wandb(trainer: pl.Trainer, metrics: dict[str, float] | None) -> None:
    """Put the final whole-set metrics in the W&B run's summary (final/...) and close it, so
    its files are complete (offline: out_dir/wandb/offline-run-*)."""
    for lg in trainer.loggers:
        if type(lg).__name__ == "WandbLogger":
            if metrics:
                lg.experiment.summary.update({f"final/{k}": v for k, v in metrics.items()})
            lg.experiment.finish()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _trainer(cfg: TrainConfig, out_dir: Path, accelerator: str, callbacks: list[pl.Callback],
             logger: bool, progress_lines: bool | None) -> pl.Trainer:
    """The Lightning Trainer of one run: checkpoints, progress output, logger, then `callbacks`."""
    checkpoints = [
        ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor="val/fvu", mode="min",
                        save_last=True, filename="best-{step}")
    ] if cfg.save_checkpoints else []
    terminal = stdout_is_terminal()
    if progress_lines is None:
        progress_lines = not terminal
    extras: list[pl.Callback] = [ProgressLines(cfg)] if progress_lines else []
    # A bar redraws itself with carriage returns: in a file or a pipe that is a wall of them.
    bar = cfg.progress_bar and terminal
    if bar:
        extras.append(StepBar())
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=cfg.max_steps,
        val_check_interval=min(cfg.val_every_steps, cfg.max_steps),
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.val_batches or 1.0,
        num_sanity_val_steps=0,
        gradient_clip_val=cfg.grad_clip or None,
        logger=_loggers(cfg, out_dir) if logger else False,
        callbacks=[*checkpoints, *extras, *callbacks],
        enable_checkpointing=cfg.save_checkpoints,
        enable_progress_bar=bar,
        enable_model_summary=False,
        log_every_n_steps=cfg.log_every_steps,
        default_root_dir=out_dir,
        **_precision(cfg, accelerator),
    )


def _precision(cfg: TrainConfig, accelerator: str) -> dict[str, Any]:
    """Trainer keyword arguments: precision and plugins (atomic checkpoints, a CPU scaler)."""
    kw = trainer_precision(cfg.precision, accelerator)
    return {**kw, "plugins": [AtomicCheckpointIO(), *kw["plugins"]]}


def train(
    cfg: TrainConfig,
    callbacks: list[pl.Callback] | tuple = (),
    ckpt_path: str | Path | None = None,
    logger: bool = True,
    progress_lines: bool | None = None,
) -> TrainResult:
    """Train one SAE. `ckpt_path` resumes from a Lightning checkpoint (e.g. out_dir/checkpoints/
    last.ckpt); the SAE, optimiser, schedules, dead-latent counters and the position in the data
    stream are restored from it, so the run continues as if never stopped.

    `progress_lines`: print a line per validation (step, tokens/s, fvu, l0, dead) to stdout;
    None: when stdout is not a terminal. The progress bar (cfg.progress_bar) shows on a terminal
    only. Ctrl-C stops after the current step, saves
    checkpoints/last.ckpt (when save_checkpoints) and raises TrainingInterrupted.
    """
    if cfg.parallel.ranks > 1:
        raise ConfigError(f"parallel: latents={cfg.parallel.latents} x data={cfg.parallel.data} "
                          "runs through `sae-lab train` (training.launch.train_parallel), not "
                          "in one process; sweeps do not take it yet")
    quiet_lightning()
    accelerator = _accelerator(cfg)  # a device this machine lacks fails before anything is written
    out_dir = Path(cfg.out_dir)
    dm = make_datamodule(cfg)
    if ckpt_path is not None:
        check_checkpoint(Path(ckpt_path), dm.d_in)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    pl.seed_everything(cfg.seed, verbose=False)
    module = build_module(cfg, dm)
    if ckpt_path is None:
        module.initialise(first_batch(dm))
    stop = StopOnInterrupt()
    trainer = _trainer(cfg, out_dir, accelerator, [stop, *callbacks], logger, progress_lines)
    with stop:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if stop.requested or trainer.interrupted:
        saved = None
        if cfg.save_checkpoints:
            saved = out_dir / "checkpoints" / "last.ckpt"
            trainer.save_checkpoint(saved)  # atomic (AtomicCheckpointIO)
        _end_wandb(trainer, None)
        raise TrainingInterrupted(trainer.global_step, saved)
    sae = module.export_sae()
    # Final metrics: the whole held-out set, not the val_batches of periodic validation.
    metrics, held_out = evaluate_held_out(sae, dm, cfg.nan_policy)
    metrics[DEAD_FRAC] = sae.dead_mask.float().mean().item()
    metrics["tokens"] = float(trainer.global_step * cfg.batch_size)
    metrics["skipped_batches"] = float(module.skipped_batches)
    sae.save(out_dir / "final")
    atomic_write_json(out_dir / "metrics.json", {**metrics, "held_out": held_out})
    _end_wandb(trainer, metrics)
    return TrainResult(sae, metrics, out_dir, held_out)


def evaluate_held_out(sae: SAE, dm: pl.LightningDataModule,
                      nan_policy: str = "error") -> tuple[dict[str, float], str]:
    """Metrics of `sae` over every held-out row of `dm`, and a line saying which rows those are.
    Non-finite rows are an error naming their shard, or (nan_policy 'skip') left out and counted
    in skipped_val_rows."""
    locate = getattr(dm, "locate_val_row", None)
    skipped = 0

    def finite(batches):
        nonlocal skipped
        row = 0
        for batch in batches:
            ok, n = finite_rows(batch, row, nan_policy, locate)
            row += len(batch)
            skipped += n
            if len(ok):
                yield ok

    metrics = evaluate_rows(sae, finite(dm.val_dataloader()))
    metrics["skipped_val_rows"] = float(skipped)
    describe = getattr(dm, "held_out", None)
    rows = int(metrics["val_tokens"])
    held_out = describe(rows) if describe else f"all {rows} held-out rows"
    if skipped:
        held_out += f" ({skipped} non-finite rows skipped)"
    return metrics, held_out


class StopOnInterrupt(pl.Callback):
    """Within `with`: the first Ctrl-C asks training to stop after the current step (Lightning
    would otherwise exit with status 1 mid-step); a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise SystemExit(130)
        self.requested = True

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.requested:
            trainer.should_stop = True


class ProgressLines(pl.Callback):
    """One line per validation, for logs and pipes where a progress bar is unreadable:
    `step 200/488  tokens 819k  9.1k tok/s  fvu 0.312  l0 31.8  dead 0.4%`."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.batch_size = cfg.batch_size
        self._start: tuple[float, int] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = (time.monotonic(), trainer.global_step)
        rows = "all held-out rows" if not trainer.limit_val_batches or \
            isinstance(trainer.limit_val_batches, float) else \
            f"the first {trainer.limit_val_batches} held-out batches"
        print(f"validating every {trainer.val_check_batch} steps on {rows}; final metrics on "
              "the whole held-out set", flush=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        cm = trainer.callback_metrics
        if trainer.sanity_checking or "val/fvu" not in cm or self._start is None:
            return
        step = trainer.global_step
        elapsed = max(time.monotonic() - self._start[0], 1e-9)
        rate = (step - self._start[1]) * self.batch_size / elapsed
        print(f"step {step}/{trainer.max_steps}  tokens {_si(step * self.batch_size)}  "
              f"{_si(rate)} tok/s  fvu {float(cm['val/fvu']):.3f}  l0 {float(cm['val/l0']):.1f}  "
              f"dead {100 * float(cm['val/dead_frac']):.1f}%", flush=True)


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


class StepBar(TQDMProgressBar):
    """The training bar counts optimiser steps up to max_steps (the stream is endless, so
    Lightning's epoch bar reads "Epoch 0/-2") and shows the current loss and FVU."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = 0
        bar.n = trainer.global_step
        bar.set_description("train")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any
                           ) -> None:
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


@torch.no_grad()
def evaluate_rows(sae: SAE, batches, max_batches: int = 0) -> dict[str, float]:
    """fvu, mse, cos, l0, l1 of an SAE (on raw activations) over an iterable of [B, d_in] rows."""
    stats = stream_stats(sae, batches, ReconStats(), max_batches)
    return {**stats.compute(), "val_tokens": float(stats.n)}


