"""`train(config)`: data -> SAE -> Lightning Trainer -> the trained SAE and its metrics."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from sae_lab.data.arrays import ArrayDataModule
from sae_lab.files import atomic_write_json
from sae_lab.sae.base import SAE
from sae_lab.sae.registry import ARCHITECTURES
from sae_lab.train.config import TrainConfig
from sae_lab.train.metrics import ReconStats
from sae_lab.train.module import SAEModule

# Lightning's advice on dataloader workers and logging intervals is noise for streaming batches.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*log_every_n_steps.*")
warnings.filterwarnings("ignore", ".*IterableDataset.*has `__len__` defined.*")

# Manifest fields that travel with the SAE so eval/inspect/steer/export know where it came from.
MANIFEST_KEYS = ("model", "revision", "layer", "hook", "hook_name", "ctx_len", "tokenizer",
                 "dtype", "model_family", "d_in")


class TrainResult(NamedTuple):
    sae: SAE
    """The trained SAE, on CPU, acting on raw (unnormalised) activations."""
    metrics: dict[str, float]
    """Final validation metrics: fvu, mse, cos, l0, l1, dead_frac, tokens, skipped_batches."""
    out_dir: Path
    """Run directory; the SAE is saved in out_dir / 'final'."""


def make_datamodule(cfg: TrainConfig) -> pl.LightningDataModule:
    data = cfg.data
    if data.synthetic is not None:
        from sae_lab.synthetic import make_features, sample

        syn = data.synthetic
        truth = make_features(syn)
        n_val = max(cfg.batch_size, int(syn.n_tokens * data.val_fraction))
        train = sample(syn, truth, syn.n_tokens, seed=syn.seed + 1)
        val = sample(syn, truth, n_val, seed=syn.seed + 2)
        return ArrayDataModule(train, val, cfg.batch_size, cfg.seed, {"source": "synthetic"})
    if data.npy is not None:
        return ArrayDataModule.from_npy(data.npy, data.val_fraction, cfg.batch_size, cfg.seed)
    from sae_lab.data.datamodule import ShardDataModule

    return ShardDataModule(data, cfg.batch_size, cfg.seed)


def _metadata(dm: pl.LightningDataModule) -> dict[str, Any]:
    manifest = getattr(dm, "manifest", None)
    if manifest is None:
        return dict(getattr(dm, "metadata", {}))
    meta = {k: manifest[k] for k in MANIFEST_KEYS if k in manifest}
    meta["source"] = str(dm.data.shards) if hasattr(dm, "data") else None
    return meta


def _accelerator(cfg: TrainConfig) -> str:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available on this machine")
    if cfg.device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if cfg.device == "cuda" else "cpu"


def build_module(cfg: TrainConfig, dm: pl.LightningDataModule) -> SAEModule:
    torch.manual_seed(cfg.seed)
    sae_cfg = cfg.sae.with_d_in(dm.d_in)
    sae = ARCHITECTURES[sae_cfg.architecture](sae_cfg, metadata=_metadata(dm))
    return SAEModule(sae, cfg)


def first_batch(dm: pl.LightningDataModule) -> torch.Tensor:
    return next(iter(dm.train_dataloader()))


def train(
    cfg: TrainConfig,
    callbacks: list[pl.Callback] | tuple = (),
    ckpt_path: str | Path | None = None,
    logger: bool = True,
) -> TrainResult:
    """Train one SAE. `ckpt_path` resumes from a Lightning checkpoint (e.g. out_dir/checkpoints/
    last.ckpt); the SAE, optimiser, schedules and dead-latent counters are restored from it."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out_dir / "config.yaml")
    pl.seed_everything(cfg.seed, verbose=False)
    dm = make_datamodule(cfg)
    module = build_module(cfg, dm)
    if ckpt_path is None:
        module.initialise(first_batch(dm))
    accelerator = _accelerator(cfg)
    precision = cfg.precision if accelerator == "gpu" else "32-true"
    checkpoints = [
        ModelCheckpoint(dirpath=out_dir / "checkpoints", monitor="val/fvu", mode="min",
                        save_last=True, filename="best-{step}")
    ] if cfg.save_checkpoints else []
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_steps=cfg.max_steps,
        val_check_interval=min(cfg.val_every_steps, cfg.max_steps),
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.val_batches or 1.0,
        num_sanity_val_steps=0,
        gradient_clip_val=cfg.grad_clip or None,
        logger=TensorBoardLogger(out_dir, name="tensorboard", version="") if logger else False,
        callbacks=[*checkpoints, *callbacks],
        enable_checkpointing=cfg.save_checkpoints,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=cfg.log_every_steps,
        default_root_dir=out_dir,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if trainer.interrupted:
        raise KeyboardInterrupt(
            f"training interrupted at step {trainer.global_step}; resume with the checkpoint "
            f"{out_dir / 'checkpoints' / 'last.ckpt'}"
        )
    sae = module.export_sae()
    metrics = evaluate_rows(sae, dm.val_dataloader(), cfg.val_batches)
    metrics["dead_frac"] = sae.dead_mask.float().mean().item()
    metrics["tokens"] = float(trainer.global_step * cfg.batch_size)
    metrics["skipped_batches"] = float(module.skipped_batches)
    sae.save(out_dir / "final")
    _write_json(out_dir / "metrics.json", metrics)
    return TrainResult(sae, metrics, out_dir)


@torch.no_grad()
def evaluate_rows(sae: SAE, batches, max_batches: int = 0) -> dict[str, float]:
    """fvu, mse, cos, l0, l1 of an SAE (on raw activations) over an iterable of [B, d_in] rows."""
    stats = ReconStats()
    sae = sae.eval()
    device = next(sae.parameters()).device
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        x = batch.to(device, sae.W_enc.dtype)
        z = sae.encode(x)
        stats.update(x, sae.decode(z), z)
    return stats.compute()


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_json(path, obj)
