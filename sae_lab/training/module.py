"""The LightningModule: optimiser, schedules, decoder-norm hooks, input scaling and metrics.

It knows nothing architecture-specific: the SAE's `training_loss` returns the loss and its named
parts, and this module logs whatever parts there are.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from torch import Tensor

from sae_lab.sae.base import SAE
from sae_lab.training.config import TrainConfig
from sae_lab.training.metrics import DEAD_FRAC, ReconStats
from sae_lab.training.optim import optimizer
from sae_lab.training.precision import fused_adam
from sae_lab.training.schedules import warmup_factor


class NonFiniteBatchError(FloatingPointError):
    """A batch produced a NaN or inf loss."""


def finite_rows(batch: Tensor, first_row: int, policy: str,
                locate=None) -> tuple[Tensor, int]:
    """The rows of a held-out batch that are finite, and how many were dropped. policy 'error':
    a non-finite row is an error naming where it came from (`locate(row)`, e.g. its shard)."""
    ok = torch.isfinite(batch).all(dim=-1)
    if bool(ok.all()):
        return batch, 0
    if policy == "error":
        row = first_row + int((~ok).nonzero()[0])
        where = locate(row) if locate is not None else f"held-out row {row}"
        raise NonFiniteBatchError(
            f"non-finite activations (NaN or inf) in {where} ({int((~ok).sum())} row(s) in this "
            "batch); set nan_policy: skip to leave such rows out and count them"
        )
    return batch[ok], int((~ok).sum())


class SAEModule(pl.LightningModule):
    def __init__(self, sae: SAE, cfg: TrainConfig) -> None:
        super().__init__()
        self.sae = sae
        self.cfg = cfg
        # Inputs are multiplied by input_scale so that E||x||^2 = d_in (1 when not normalising).
        self.register_buffer("input_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.long))
        self.skipped_val_rows = 0
        """Non-finite held-out rows left out of the last validation (nan_policy: skip)."""
        self._val: ReconStats | None = None

    @torch.no_grad()
    def initialise(self, sample: Tensor) -> None:
        """Input scale and b_dec from a sample of training rows, before the first step."""
        sample = sample.double()
        if self.cfg.normalize_activations:
            mean_sq_norm = sample.pow(2).sum(dim=-1).mean()
            self.input_scale.fill_((self.sae.d_in / mean_sq_norm).sqrt().item())
        x = self.sae.normalize_input(sample * self.input_scale)
        if self.cfg.init_b_dec:
            self.sae.init_from_data(x)
        if self.cfg.init_near_data:
            self.sae.init_near_data(x)

    def _scaled(self, batch: Tensor) -> Tensor:
        dtype = self.sae.W_enc.dtype
        return batch.to(dtype) * self.input_scale.to(dtype)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor | None:
        step = self.global_step
        x = self.sae.normalize_input(self._scaled(batch))  # train/ metrics are in its units
        out = self.sae.training_loss(x, step, warmup_factor(step, self.cfg.sparsity_warmup_steps))
        if not torch.isfinite(out.loss):
            culprit = "batch" if not torch.isfinite(batch).all() else "loss"
            if self.cfg.nan_policy == "error":
                raise NonFiniteBatchError(
                    f"step {step}: non-finite {culprit} (NaN or inf); set nan_policy: skip to "
                    "skip such batches"
                )
            self.skipped_batches += 1
            return None  # Lightning skips the backward pass and the optimiser step
        self.sae.after_step(out, step)  # dead-latent counts, thresholds: state kept out of encode
        if step % self.cfg.log_every_steps == 0:
            self._log_train(out, step, x)
        return out.loss

    def train_metrics(self, out, step: int, x: Tensor) -> dict[str, Tensor]:
        """The train/ scalars of one step (loss parts, L0, batch FVU, dead fraction, ...)."""
        metrics = {f"train/{k}": v.float() for k, v in out.parts.items()}
        metrics["train/loss"] = out.loss.detach().float()
        metrics["train/l0"] = out.l0.float()
        with torch.no_grad():
            var = (x - x.mean(dim=0)).pow(2).sum()
            metrics["train/fvu"] = (out.x_hat.detach() - x).pow(2).sum() / var
        metrics["train/dead_frac"] = self.sae.dead_fraction()
        metrics["train/skipped_batches"] = self.skipped_batches.float()
        for k, v in self.sae.extra_metrics(step).items():
            metrics[f"train/{k}"] = torch.tensor(v)
        return metrics

    def _log_train(self, out, step: int, x: Tensor) -> None:
        # Straight to the loggers, one device sync for all scalars: Lightning's self.log keeps
        # per-key state for epoch reduction that train/ scalars never use, and at small shapes
        # cost more than the step itself (~1.5 ms a key).
        bar = self.trainer.progress_bar_callback is not None
        if not self.loggers and not bar:
            return
        metrics = self.train_metrics(out, step, x)
        values = torch.stack([v.detach().float().cpu() for v in metrics.values()]).tolist()
        scalars = dict(zip(metrics, values, strict=True))
        if bar:
            self.log("loss", scalars["train/loss"], prog_bar=True, logger=False)
            self.log("fvu", scalars["train/fvu"], prog_bar=True, logger=False)
        scalars["train/lr"] = self.optimizers().param_groups[0]["lr"]
        scalars["tokens"] = float((step + 1) * self.cfg.batch_size)
        for lg in self.loggers:
            lg.log_metrics(scalars, step=step)

    def on_before_optimizer_step(self, optimizer) -> None:
        self.sae.remove_parallel_grads()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.sae.normalize_decoder()

    # --- validation: metrics in the raw activation space, over the whole validation set ---------

    def on_validation_epoch_start(self) -> None:
        self._val = ReconStats()
        self.skipped_val_rows = 0

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        dm = self.trainer.datamodule
        locate = getattr(dm, "locate_val_row", None)
        batch, skipped = finite_rows(batch, batch_idx * self.cfg.batch_size, self.cfg.nan_policy,
                                     locate)
        self.skipped_val_rows += skipped
        if not len(batch):
            return
        x = self._scaled(batch)
        z = self.sae.encode(x)
        x_hat = self.sae.decode(z, x) / self.input_scale.to(x.dtype)
        self._val.update(batch.to(x.dtype), x_hat, z)

    def on_validation_epoch_end(self) -> None:
        if self._val is None or self._val.n == 0:
            return
        metrics = {f"val/{k}": v for k, v in self._val.compute().items()}
        metrics[f"val/{DEAD_FRAC}"] = self.sae.dead_mask.float().mean().item()
        metrics["val/tokens"] = float(self._val.n)
        metrics["val/skipped_rows"] = float(self.skipped_val_rows)
        metrics["tokens"] = float(self.global_step * self.cfg.batch_size)
        self.log_dict(metrics, on_step=False, on_epoch=True)

    # --- optimiser ---------------------------------------------------------------------------

    def configure_optimizers(self):
        opt, sched = optimizer(self.sae, self.cfg, fused=fused_adam(self._trainer))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- the trained SAE, on raw activations -------------------------------------------------

    def export_sae(self) -> SAE:
        """A CPU copy of the SAE in eval mode with the input scale folded into its weights."""
        sae = copy.deepcopy(self.sae).cpu().eval()
        sae.fold_input_scale(float(self.input_scale))
        sae.metadata["input_scale_folded"] = float(self.input_scale)
        return sae
