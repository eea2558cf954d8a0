"""A pack: several SAEs trained from one data stream, one normalisation sample, one batch at a time.

    one datamodule -> batch -> member 0: scale, training_loss, backward, clip -+
                             -> member 1: ...                                    +-> one Adam
                             -> member N: ...                                   -+   step (groups
                                                                                      per member)

Members may differ in architecture, k, lambda, lr, expansion factor and schedules; each keeps its
own input scale, parameters, Adam state (its own parameter groups, betas and learning-rate
schedule), dead-latent counters, metrics, TensorBoard run and W&B run (with wandb in its
loggers: its config, curves and final metrics, the run id kept in members/<name>/wandb_run_id).
One optimiser holds every member's groups because Lightning counts each optimiser step as a
global step; Adam is elementwise, so one optimiser over N members' groups gives each member
exactly the update it gets alone (tested: tests/training/test_pack.py). Members that share a
data stream must agree on `STREAM_FIELDS`, except the layer of a live source: members on
different layers read them from one forward pass, each from its own layer's slice of the batch
(sae_lab.data.live.LayerView).

A member stops on its own: early stopping (`stop`), or a NaN loss (with nan_policy: error it is
marked failed with its error and the pack goes on). A stopped member takes no more forward or
backward passes; the pack ends when no member is running or at max_steps.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn

from sae_lab.data.live import LayerView, LiveDataModule
from sae_lab.files import atomic_write_json, atomic_write_text
from sae_lab.training import precision
from sae_lab.training.checkpoint_io import AtomicCheckpointIO
from sae_lab.training.config import ConfigError, TrainConfig
from sae_lab.training.metrics import DEAD_FRAC, ReconStats
from sae_lab.training.module import SAEModule, finite_rows
from sae_lab.training.run import (
    StopOnInterrupt,
    TrainingInterrupted,
    _accelerator,
    build_module,
    check_checkpoint,
    evaluate_held_out,
    first_batch,
    make_datamodule,
    quiet_lightning,
)
from sae_lab.training.schedules import lr_factor, warmup_factor
from sae_lab.training.wandb_runs import finish_run, log_to_run, open_run

STREAM_FIELDS = ("data", "batch_size", "max_tokens", "seed", "device", "precision",
                 "val_every_steps", "val_batches")
"""TrainConfig fields that make the data stream and the pack's clock: members share them."""

RUNNING, STOPPED, FAILED, DONE = "running", "stopped", "failed", "done"


def stream_key(cfg: TrainConfig) -> str:
    """Configs with equal keys can be trained in one pack."""
    return json.dumps(_stream(cfg), sort_keys=True, default=str)


def _stream(cfg: TrainConfig) -> dict[str, Any]:
    """The STREAM_FIELDS of cfg, a live source's layer left out (one forward feeds them all)."""
    d = cfg.to_dict()
    out = {k: d[k] for k in STREAM_FIELDS}
    if out["data"].get("live"):
        out["data"] = {**out["data"], "live": {**out["data"]["live"], "layers": None}}
    return out


def member_layer(cfg: TrainConfig) -> int | None:
    """The live layer a member reads; None for other sources."""
    return cfg.data.live.layers[0] if cfg.data.live is not None else None


def pack_datamodule(cfgs: list[TrainConfig]) -> Any:
    """The pack's one data source: the first member's, reading every member's live layer."""
    layers = sorted({member_layer(c) for c in cfgs} - {None})
    if len(layers) <= 1:
        return make_datamodule(cfgs[0])
    cfg = cfgs[0]
    data = replace(cfg.data, live=replace(cfg.data.live, layers=tuple(layers)))
    return LiveDataModule(data, cfg.batch_size, cfg.seed)


def member_views(cfgs: list[TrainConfig], dm: Any) -> list[Any]:
    """What each member sees of the pack's datamodule: its layer's view, or the whole of it."""
    if len(getattr(getattr(dm, "source", None), "layers", ())) <= 1:
        return [dm] * len(cfgs)
    return [dm.layer_view(member_layer(c)) for c in cfgs]


def _pick(view: Any, batch: torch.Tensor) -> torch.Tensor:
    return view.pick(batch) if isinstance(view, LayerView) else batch


def check_stream(cfgs: list[TrainConfig], names: list[str]) -> None:
    """One line naming the first member whose data stream differs from the first member's."""
    first = _stream(cfgs[0])
    for cfg, name in zip(cfgs[1:], names[1:], strict=True):
        d = _stream(cfg)
        for k in STREAM_FIELDS:
            if d[k] != first[k]:
                raise ValueError(f"pack member {name}: {k}={d[k]!r} differs from member "
                                 f"{names[0]}'s {first[k]!r}; a pack shares one data stream")


class MemberResult(NamedTuple):
    name: str
    status: str
    """done (ran to max_tokens), stopped (early stopping) or failed."""
    metrics: dict[str, float]
    """Final metrics on the whole held-out set (as train()); empty when failed."""
    sae: Any
    """The trained SAE (CPU, raw activations), None when failed."""
    error: str = ""


class PackModule(pl.LightningModule):
    """N SAEModules fed the same batches; manual optimisation, one optimiser step per batch."""

    def __init__(self, members: list[SAEModule], names: list[str],
                 log_dir: Path | None = None, views: list[Any] | None = None,
                 devices: list[str | None] | None = None) -> None:
        super().__init__()
        self.views = views or [None] * len(members)
        """Each member's view of the datamodule (its layer of a several-layer live source)."""
        self.devices = [None if d is None else torch.device(d)
                        for d in (devices or [None] * len(members))]
        """Each member's device (None: the trainer's); batches move there once per step."""
        self.automatic_optimization = False
        self.members = nn.ModuleList(members)
        self.names = list(names)
        self.status = [RUNNING] * len(members)
        self.errors = [""] * len(members)
        self.stopped_at = [0] * len(members)
        """Tokens trained when the member stopped or failed (0 while running)."""
        self.val_metrics: list[dict[str, float]] = [{} for _ in members]
        """Each member's metrics from the last validation."""
        self.log_dir = log_dir
        self._loggers: list[TensorBoardLogger] | None = None
        self.wandb_runs: list[Any] = [None] * len(members)
        """Each member's W&B run (None: wandb not in its loggers); see open_wandb."""
        self._val: list[ReconStats | None] = [None] * len(members)
        self._groups: list[list[int]] = []
        self._stepped: list[int] = []

    @property
    def cfg(self) -> TrainConfig:
        return self.members[0].cfg

    def on_fit_start(self) -> None:
        """Members assigned a device of their own move there, after Lightning has put the whole
        pack on its root device, built the optimiser and restored any checkpoint: parameters
        move in place (the optimiser keeps them), Adam's restored moments follow them."""
        if not any(self.devices):
            return
        opt = self.optimizers().optimizer
        for m, device in zip(self.members, self.devices, strict=True):
            if device is None:
                continue
            m.to(device)
            for p in m.parameters():
                for k, v in opt.state.get(p, {}).items():
                    if isinstance(v, torch.Tensor):
                        opt.state[p][k] = v.to(device)

    def _to_member(self, i: int, batch: torch.Tensor) -> torch.Tensor:
        batch = _pick(self.views[i], batch)
        device = self.devices[i]
        return batch if device is None else batch.to(device, non_blocking=True)

    def running(self) -> list[int]:
        return [i for i, s in enumerate(self.status) if s == RUNNING]

    def stop(self, i: int, status: str = STOPPED, error: str = "") -> None:
        """Member i takes no more steps (early stopping, or failed with `error`)."""
        if self.status[i] != RUNNING:
            return
        self.status[i], self.errors[i] = status, error
        self.stopped_at[i] = self.global_step * self.cfg.batch_size
        if self.trainer is not None and not self.running():
            self.trainer.should_stop = True

    # --- per-member TensorBoard and W&B runs -------------------------------------------------

    def member_logger(self, i: int) -> TensorBoardLogger | None:
        if self.log_dir is None or "tensorboard" not in self.members[i].cfg.loggers:
            return None
        if self._loggers is None:
            self._loggers = [TensorBoardLogger(self.log_dir / name, name="tensorboard",
                                               version="") for name in self.names]
        return self._loggers[i]

    def open_wandb(self, given_ids: dict[str, str] | None = None) -> None:
        """A W&B run for each member with wandb in its loggers, continuing the run whose id
        `given_ids` (a sweep's checkpoint) or members/<name>/wandb_run_id holds."""
        if self.log_dir is None:
            return
        for i, (m, name) in enumerate(zip(self.members, self.names, strict=True)):
            if "wandb" in m.cfg.loggers and self.wandb_runs[i] is None:
                self.wandb_runs[i] = open_run(m.cfg.wandb, self.log_dir / name, m.cfg.to_dict(),
                                              name=name, given_id=(given_ids or {}).get(name))

    @property
    def wandb_ids(self) -> dict[str, str]:
        """Member name -> its W&B run id (members with a W&B run)."""
        return {n: r.id for n, r in zip(self.names, self.wandb_runs, strict=True) if r}

    def close_wandb(self, results: list[MemberResult] | None = None,
                    failed: bool = False) -> None:
        """Finish every member's W&B run, with its final whole-set metrics (and status) in
        the summary when `results` are given."""
        final = {r.name: {**r.metrics, "status": r.status, **({"error": r.error} if r.error
                                                            else {})} for r in results or []}
        for i, run in enumerate(self.wandb_runs):
            if run is not None:
                finish_run(run, final.get(self.names[i]), failed)
                self.wandb_runs[i] = None

    def _log(self, i: int, metrics: dict[str, Any], step: int) -> None:
        logger = self.member_logger(i)
        if logger is not None:
            logger.log_metrics({k: float(v) for k, v in metrics.items()}, step)
        if self.wandb_runs[i] is not None:
            log_to_run(self.wandb_runs[i], metrics, step)

    # --- training ----------------------------------------------------------------------------

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        opt, sched = self.optimizers(), self.lr_schedulers()
        step = self.global_step
        opt.zero_grad(set_to_none=True)
        self._stepped = [i for i in self.running() if self._member_step(i, batch, step)]
        opt.step()
        sched.step()
        for i in self._stepped:
            self.members[i].sae.normalize_decoder()

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip each stepped member's gradients; Lightning calls this inside `opt.step()`, after
        a gradient scaler (16-mixed) has unscaled them."""
        for i in self._stepped:
            m = self.members[i]
            if m.cfg.grad_clip:
                params = [p for g in self._member_groups(i) for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, m.cfg.grad_clip)

    def _member_step(self, i: int, batch: torch.Tensor, step: int) -> bool:
        """Forward, backward and parallel-gradient removal of member i (then clipping, in
        on_before_optimizer_step: the order Lightning runs for one SAEModule). False: no update."""
        m = self.members[i]
        batch = self._to_member(i, batch)
        x = m.sae.normalize_input(m._scaled(batch))
        out = m.sae.training_loss(x, step, warmup_factor(step, m.cfg.sparsity_warmup_steps))
        if not torch.isfinite(out.loss):
            culprit = "batch" if not torch.isfinite(batch).all() else "loss"
            if m.cfg.nan_policy == "error":
                self.stop(i, FAILED, f"NonFiniteBatchError: step {step}: non-finite {culprit} "
                                     "(NaN or inf)")
            else:
                m.skipped_batches += 1
            return False
        m.sae.after_step(out, step)
        self.manual_backward(out.loss)
        m.sae.remove_parallel_grads()
        if step % m.cfg.log_every_steps == 0:
            self._log_train(i, out, step, x)
        return True

    def _member_groups(self, i: int) -> list[dict[str, Any]]:
        groups = self.optimizers().optimizer.param_groups
        return [groups[g] for g in self._groups[i]]

    def _log_train(self, i: int, out: Any, step: int, x: torch.Tensor) -> None:
        if self.log_dir is None:
            return
        m = self.members[i]
        metrics = m.train_metrics(out, step, x)
        metrics["train/lr"] = self._member_groups(i)[0]["lr"]
        metrics["tokens"] = (step + 1) * m.cfg.batch_size
        self._log(i, metrics, step)

    # --- validation: each running member over the same held-out batches ----------------------

    def on_validation_epoch_start(self) -> None:
        self._val = [ReconStats() if s == RUNNING else None for s in self.status]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        locate = getattr(self.trainer.datamodule, "locate_val_row", None)
        for i, stats in enumerate(self._val):
            if stats is None:
                continue
            own, _ = finite_rows(self._to_member(i, batch), batch_idx * self.cfg.batch_size,
                                 "skip", locate)
            if not len(own):
                continue
            m = self.members[i]
            x = m._scaled(own)
            z = m.sae.encode(x)
            stats.update(own.to(x.dtype), m.sae.decode(z, x) / m.input_scale.to(x.dtype), z)

    def on_validation_epoch_end(self) -> None:
        tokens = float(self.global_step * self.cfg.batch_size)
        for i, stats in enumerate(self._val):
            if stats is None or stats.n == 0:
                continue
            metrics = stats.compute()
            metrics[DEAD_FRAC] = self.members[i].sae.dead_mask.float().mean().item()
            metrics["val_tokens"] = float(stats.n)
            self.val_metrics[i] = {**metrics, "tokens": tokens}
            self._log(i, {f"val/{k}": v for k, v in metrics.items()}, self.global_step)

    # --- optimiser: a parameter group per member group, a schedule per group -----------------

    def configure_optimizers(self):
        groups, lambdas = [], []
        self._groups = []
        for m in self.members:
            cfg = m.cfg
            own = m.sae.param_groups(cfg.lr)
            self._groups.append(list(range(len(groups), len(groups) + len(own))))
            for g in own:
                groups.append({**g, "betas": cfg.adam_betas})
                lambdas.append(_lr_lambda(cfg))
        # fused Adam, as SAEModule: one kernel for all parameters of all members.
        opt = torch.optim.Adam(groups, lr=self.cfg.lr, fused=precision.fused_adam(self._trainer))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- member status travels with the checkpoint -------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pack"] = {"names": self.names, "status": self.status, "errors": self.errors,
                              "stopped_at": self.stopped_at, "val_metrics": self.val_metrics}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pack = checkpoint.get("pack")
        if pack is None:
            return
        if pack["names"] != self.names:
            raise ValueError(f"checkpoint holds pack members {pack['names']}, not {self.names}")
        self.status, self.errors = list(pack["status"]), list(pack["errors"])
        self.stopped_at, self.val_metrics = list(pack["stopped_at"]), list(pack["val_metrics"])


def _lr_lambda(cfg: TrainConfig):
    return lambda s: lr_factor(s, cfg.lr_warmup_steps, cfg.max_steps, cfg.lr_decay_start)


class SaveLast(pl.Callback):
    """`path` (atomically) after every validation, so it holds the members' status after the
    early-stopping decisions made at that validation."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        tmp.replace(self.path)


def _pack_trainer(cfg: TrainConfig, out_dir: Path, accelerator: str,
                  callbacks: list[pl.Callback], save_checkpoints: bool) -> pl.Trainer:
    kw = precision.trainer_precision(cfg.precision, accelerator)
    checkpoints = [SaveLast(out_dir / "checkpoints" / "last.ckpt")] if save_checkpoints else []
    return pl.Trainer(
        accelerator=accelerator, devices=1, precision=kw["precision"], max_steps=cfg.max_steps,
        val_check_interval=min(cfg.val_every_steps, cfg.max_steps),
        check_val_every_n_epoch=None, limit_val_batches=cfg.val_batches or 1.0,
        num_sanity_val_steps=0, logger=False, callbacks=[*checkpoints, *callbacks],
        enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=out_dir,
        plugins=[AtomicCheckpointIO(), *kw["plugins"]],
    )


def build_pack(cfgs: list[TrainConfig], names: list[str], dm: pl.LightningDataModule,
               log_dir: Path | None, devices: list[str | None] | None = None) -> PackModule:
    """Each member built as its unpacked run builds it (seeded with its own seed), then input
    scale and b_dec from the same first batch (its layer's slice)."""
    views = member_views(cfgs, dm)
    members = [build_module(cfg, view) for cfg, view in zip(cfgs, views, strict=True)]
    sample = first_batch(dm)
    for m, view in zip(members, views, strict=True):
        m.initialise(_pick(view, sample))
    return PackModule(members, names, log_dir, views, devices)


def train_pack(cfgs: list[TrainConfig], names: list[str], out_dir: str | Path,
               callbacks: list[pl.Callback] | tuple = (), ckpt_path: str | Path | None = None,
               logger: bool = True, save_checkpoints: bool = True,
               save_final: bool = True,
               wandb_ids: dict[str, str] | None = None,
               devices: list[str | None] | None = None) -> list[MemberResult]:
    """Train the members of a pack together; each member's SAE and metrics land in
    out_dir/members/<name>/ (final/ and metrics.json unless not `save_final`; tensorboard/ and
    wandb/ as its `loggers` say). `ckpt_path` resumes all members (weights, Adam state,
    schedules, dead counters, status, stream position) and their W&B runs (the ids in
    `wandb_ids`, else in members/<name>/wandb_run_id). `devices`: a device per member (e.g.
    from `spread`), None for the trainer's: the data source and its forward pass stay on the
    trainer's device, each member's SAE steps on its own, the batch moved to it once per step."""
    if devices is not None and len(devices) != len(cfgs):
        raise ValueError(f"a pack of {len(cfgs)} members got {len(devices)} devices")
    if len(set(names)) != len(names) or len(names) != len(cfgs) or not cfgs:
        raise ValueError(f"a pack needs one unique name per member, got {names}")
    check_stream(cfgs, names)
    if any(c.parallel.ranks > 1 for c in cfgs):
        raise ConfigError("parallel: a pack trains in one process; packs do not take it yet")
    quiet_lightning()
    cfg = cfgs[0]
    accelerator = _accelerator(cfg)
    out_dir = Path(out_dir)
    dm = pack_datamodule(cfgs)
    if ckpt_path is not None:
        check_checkpoint(Path(ckpt_path), dm.d_in, key="members.0.sae.W_enc")
    members_dir = out_dir / "members"
    for c, name in zip(cfgs, names, strict=True):
        (members_dir / name).mkdir(parents=True, exist_ok=True)
        atomic_write_text(members_dir / name / "config.yaml",
                          yaml.safe_dump(c.to_dict(), sort_keys=False))
    pl.seed_everything(cfg.seed, verbose=False)
    pack = build_pack(cfgs, names, dm, members_dir if logger else None, devices)
    pack.open_wandb(wandb_ids)
    try:
        step = _fit(pack, dm, cfg, out_dir, accelerator, callbacks, ckpt_path,
                    save_checkpoints)
        results = finish(pack, dm, step, members_dir if save_final else None)
    except BaseException as e:
        pack.close_wandb(failed=not isinstance(e, TrainingInterrupted))
        raise
    pack.close_wandb(results)
    return results


def _fit(pack: PackModule, dm: pl.LightningDataModule, cfg: TrainConfig, out_dir: Path,
         accelerator: str, callbacks: list[pl.Callback] | tuple,
         ckpt_path: str | Path | None, save_checkpoints: bool) -> int:
    """Lightning's fit of the pack; returns the global step it ended at (TrainingInterrupted
    after Ctrl-C, with the checkpoint saved)."""
    stop = StopOnInterrupt()
    trainer = _pack_trainer(cfg, out_dir, accelerator, [stop, *callbacks], save_checkpoints)
    with stop:
        trainer.fit(pack, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if stop.requested or trainer.interrupted:
        saved = None
        if save_checkpoints:
            saved = out_dir / "checkpoints" / "last.ckpt"
            tmp = saved.with_name("last.ckpt.tmp")
            trainer.save_checkpoint(tmp)
            tmp.replace(saved)
        raise TrainingInterrupted(trainer.global_step, saved)
    return trainer.global_step


def spread(n_members: int, n_gpus: int) -> list[str | None]:
    """Members dealt round-robin over `n_gpus` CUDA devices (cuda:0 holds the model too);
    all on the trainer's device when there are fewer than two."""
    if n_gpus < 2:
        return [None] * n_members
    return [f"cuda:{i % n_gpus}" for i in range(n_members)]


def finish(pack: PackModule, dm: pl.LightningDataModule, global_step: int,
           members_dir: Path | None) -> list[MemberResult]:
    """Each member's final metrics on the whole held-out set, saved under members_dir/<name>."""
    results = []
    for i, (m, name) in enumerate(zip(pack.members, pack.names, strict=True)):
        if pack.status[i] == FAILED:
            results.append(MemberResult(name, FAILED, {}, None, pack.errors[i]))
            continue
        if pack.status[i] == RUNNING:
            pack.status[i] = DONE
        sae = m.export_sae()
        view = pack.views[i] if isinstance(pack.views[i], LayerView) else dm
        metrics, held_out = evaluate_held_out(sae, view, m.cfg.nan_policy)
        metrics[DEAD_FRAC] = sae.dead_mask.float().mean().item()
        metrics["tokens"] = float(pack.stopped_at[i] or global_step * m.cfg.batch_size)
        metrics["skipped_batches"] = float(m.skipped_batches)
        if members_dir is not None:
            sae.save(members_dir / name / "final")
            atomic_write_json(members_dir / name / "metrics.json",
                              {**metrics, "held_out": held_out, "status": pack.status[i]})
        results.append(MemberResult(name, pack.status[i], metrics, sae))
    return results
