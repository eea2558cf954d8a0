"""Run a sweep with Ray Tune: one Lightning training per trial, ASHA early stopping, retries,
resume, and any Ray cluster (`address`).

    sweep YAML --validate--> Tuner(trainable, param_space, ASHA, FailureConfig) --fit-->
        trials: train(cfg, callbacks=[TuneReport]) --tune.report(metrics, checkpoint)-->
    SweepResult --> results.csv, pareto.png, best/   (sae_lab.sweep.report)

Every trial reports at each validation with a checkpoint holding the Lightning state (to resume a
retried or interrupted trial) and the SAE with input normalisation folded in (to export).
With `pack` > 1 (or auto) a trial trains a pack of SAEs instead (sae_lab.sweep.packs: run_pack,
early stopping per member by a rungs actor, no Tune scheduler).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from ray.tune import Callback

from sae_lab.files import atomic_write_json, atomic_write_text, disk_full_error, is_disk_full
from sae_lab.sae.config import ConfigError
from sae_lab.sweep import progress as trial_progress
from sae_lab.sweep.bench import bench_sweep
from sae_lab.sweep.outdir import (
    check_out_dir,
    check_state,
    explicit_loggers,
    mark,
    record_state,
    refuse_changed,
)
from sae_lab.sweep.recover import TUNER_FILE, remove_partial_files, repair_trials, whole_pickle
from sae_lab.sweep.report import (
    EXPERIMENT,
    FINISHED,
    VAL_METRICS,
    SweepResult,
    load_result,
    write_report,
)
from sae_lab.sweep.scheduler import architecture_of, build_scheduler
from sae_lab.sweep.schema import CheckedSweep, SweepConfig, sweep_from_dict, validate
from sae_lab.sweep.space import build_search_alg, check_resources, param_space, trial_values
from sae_lab.sweep.trial import TrialError, quiet_trial
from sae_lab.training.metrics import objective
from sae_lab.training.wandb_runs import run_id

TRAINER_CKPT = "trainer.ckpt"
SAE_DIR = "sae"
METRICS_FILE = "metrics.json"
KEEP_CHECKPOINTS = 1
"""Checkpoints Tune keeps per trial: the latest, the one its last reported metrics belong to."""


class TuneReport(pl.Callback):
    """At the end of every validation: `ray.tune.report(metrics, checkpoint=...)`.

    The checkpoint holds trainer.ckpt (Lightning: SAE, optimiser, schedules, loop position) and
    sae/ (SAE.save with the input scale folded in), so the reported metrics and the saved SAE
    always belong to the same step.
    """

    def __init__(self, l0_weight: float, batch_size: int, info: dict[str, Any],
                 restored: dict[str, Any] | None = None) -> None:
        self.l0_weight = l0_weight
        self.batch_size = batch_size
        self.info = info
        # A checkpoint written at the end of a validation is resumed by running that validation
        # again; its metrics were reported already.
        self.last_tokens = restored["tokens"] if restored else -1.0
        self.wall_start = time.monotonic() - (restored["wall_time_s"] if restored else 0.0)

    def metrics(self, val: dict[str, float], d_in: int, tokens: float,
                final: bool = False) -> dict[str, Any]:
        # Tune's status table shows the first four keys
        m = {"objective": objective(float(val["fvu"]), float(val["l0"]), d_in, self.l0_weight)}
        m.update({k: float(val[k]) for k in VAL_METRICS})
        m["tokens"] = float(tokens)
        # Periodic validations use val_batches; the final report, the one the sweep ranks on,
        # the whole held-out set (final=1).
        m["val_tokens"] = float(val.get("val_tokens", 0.0))
        m["final"] = float(final)
        m["wall_time_s"] = time.monotonic() - self.wall_start  # across restores of this trial
        return {**m, **self.info}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        tokens = float(trainer.global_step * self.batch_size)
        if tokens <= self.last_tokens:
            return
        cm = trainer.callback_metrics
        val = {k: float(cm[f"val/{k}"]) for k in VAL_METRICS}
        val["val_tokens"] = float(cm["val/tokens"]) if "val/tokens" in cm else 0.0
        metrics = self.metrics(val, pl_module.sae.d_in, tokens)
        with tempfile.TemporaryDirectory(prefix="sae_lab_ckpt_") as tmp:
            trainer.save_checkpoint(Path(tmp) / TRAINER_CKPT, weights_only=False)
            _save_sae(pl_module.export_sae(), Path(tmp), metrics)
            _report(metrics, tmp)
        self.last_tokens = tokens

    def final(self, result: Any) -> None:
        """After training: report the final metrics, on the whole held-out set (the last
        validation, at the same step maybe, saw only val_batches of it)."""
        metrics = self.metrics(result.metrics, result.sae.d_in, result.metrics["tokens"],
                               final=True)
        with tempfile.TemporaryDirectory(prefix="sae_lab_ckpt_") as tmp:
            _save_sae(result.sae, Path(tmp), metrics)
            _report(metrics, tmp)
        self.last_tokens = result.metrics["tokens"]


def _save_sae(sae: Any, directory: Path, metrics: dict[str, Any]) -> None:
    sae.metadata["sweep"] = {k: v for k, v in metrics.items() if k != "node"}
    sae.save(directory / SAE_DIR)
    atomic_write_json(directory / METRICS_FILE, metrics)


def _report(metrics: dict[str, Any], directory: str) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """Tune trainable: train one SAE, resuming from Tune's checkpoint when there is one."""
    import ray
    import torch
    from ray import tune

    from sae_lab.training.run import train

    quiet_trial()
    spec = sweep_from_dict(sweep)
    arch, values = trial_values(spec, config)
    cfg = spec.train_config(arch, values)
    # Tune's per-trial working directory: TensorBoard logs written here are synced to the
    # sweep's output directory with every checkpoint (SyncConfig(sync_artifacts=True)).
    cfg.out_dir = os.getcwd()
    cfg.save_checkpoints = False  # Tune keeps the trial's checkpoints (TuneReport)
    # Every report is ranked (ASHA, results.csv for trials stopped early, best/): each must be
    # measured on the whole held-out set, not on the first val_batches of it.
    cfg.val_batches = 0
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    if "wandb" in cfg.loggers:
        # The trial's W&B run is named by its Tune trial id, which a resumed sweep keeps (its
        # working folder, where train() keeps the id, is a new one): resuming continues the run.
        run_id(Path(cfg.out_dir), f"{spec.name}-{tune.get_context().get_trial_id()}")
    info = {
        "architecture": arch,
        "node": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
    }
    ckpt_path, last = None, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        local = Path(checkpoint.to_directory())
        last = json.loads((local / METRICS_FILE).read_text())
        if last["tokens"] >= cfg.max_steps * cfg.batch_size:
            # Finished before the sweep was killed, but Tune's experiment state (saved every
            # ~10 s) had not caught up: report the result again instead of training again,
            # measured on the whole held-out set if the final report had not been made.
            if not last.get("final"):
                last = _final_from_checkpoint(local, cfg, spec.objective.l0_weight, info, last)
            tune.report(last, checkpoint=checkpoint)
            return
        ckpt_path = local / TRAINER_CKPT
    report = TuneReport(spec.objective.l0_weight, cfg.batch_size, info, restored=last)
    try:
        result = train(cfg, callbacks=[report], ckpt_path=ckpt_path, logger=True,
                       progress_lines=False)
    except Exception as e:  # Tune retries it; results.csv shows this line and where it died
        raise TrialError(f"{type(e).__name__}: {e} (on host {info['hostname']}, node "
                         f"{info['node'][:8]})") from e
    report.final(result)


def _final_from_checkpoint(local: Path, cfg: Any, l0_weight: float, info: dict[str, Any],
                           last: dict[str, Any]) -> dict[str, Any]:
    """The final metrics of a trial's saved SAE on the whole held-out set."""
    from sae_lab.sae.base import load
    from sae_lab.training.run import evaluate_held_out, make_datamodule

    sae = load(local / SAE_DIR)
    val, _ = evaluate_held_out(sae, make_datamodule(cfg), cfg.nan_policy)
    val["dead_frac"] = last["dead_frac"]
    report = TuneReport(l0_weight, cfg.batch_size, info, restored=last)
    return report.metrics(val, sae.d_in, last["tokens"], final=True)


def run_sweep(
    sweep: SweepConfig,
    out: str | Path,
    address: str | None = None,
    resume: bool = False,
    verbose: int = 1,
    trust_state: bool = False,
) -> SweepResult:
    """Validate, launch (or resume) the sweep under `out`, then write its report (results.csv,
    pareto.png, best/) and return it. Trials still unfinished (the sweep was stopped with Ctrl-C
    or SIGTERM) have status "unfinished".

    An `out` holding files no sweep wrote is refused before anything runs. resume=True unpickles
    OUT/tune/tuner.pkl through Ray: a crafted file there runs code, so a tuner.pkl another user
    owns, or one whose sha256 the sweep did not record, is refused unless `trust_state`."""
    import ray
    from ray import tune

    out = Path(out).resolve()
    checked = validate(sweep)
    _check_before_start(sweep, out, resume, trust_state)
    # num_to_keep=1 makes Tune snapshot its state at every checkpoint (what keeps --resume exact);
    # with frequent validations it warns about exactly that.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    exp_dir = out / EXPERIMENT
    started_ray = not ray.is_initialized()
    if started_ray:
        # Without --address: a private local instance, never whatever cluster another job left
        # running on this machine (RAY_ADDRESS still wins when the user sets it).
        ray.init(address=address or os.environ.get("RAY_ADDRESS", "local"),
                 include_dashboard=False if not address else None)
    # Preemption (Kaggle, SLURM) sends SIGTERM: stop like Ctrl-C, so that Tune saves its state
    # and --resume can continue. Installed after ray.init, which sets its own SIGTERM handler.
    old_handler = _sigterm_as_sigint()
    rungs = None
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        check_resources(sweep, nodes)
        if not resume:
            _record_spec(sweep, out)
        trainable, space, tune_config, rungs = _trials(sweep, checked, out, nodes)
        run_config = _run_config(sweep, out, verbose)
        if verbose:
            print(f"TensorBoard: tensorboard --logdir {exp_dir}", flush=True)
        if resume:
            if not whole_pickle(exp_dir / TUNER_FILE):
                _note(f"{exp_dir / TUNER_FILE} is incomplete (a full disk?); written again")
                tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                           run_config=run_config)
                record_state(out, explicit_loggers=True)
            repair_trials(exp_dir, say=_note)
            tuner = tune.Tuner.restore(
                str(exp_dir), trainable, resume_unfinished=True, resume_errored=False,
                restart_errored=False, param_space=space,
            )
        else:
            tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                               run_config=run_config)
            record_state(out, explicit_loggers=True)
        with _disk_full_names(exp_dir), _without_tune_tensorboard(explicit_loggers(out)), \
                _no_trial_tracebacks():
            grid = tuner.fit()
            return finish(grid, sweep, out)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
        if rungs is not None:
            ray.kill(rungs)
        if started_ray:
            ray.shutdown()


def _check_before_start(sweep: SweepConfig, out: Path, resume: bool, trust_state: bool) -> None:
    """Everything that refuses a sweep before Ray starts: a folder of someone else's files, a
    resume with nothing to resume, another sweep's settings or a Tune state it cannot vouch for,
    a start over a sweep already there."""
    from ray.tune import Tuner

    spec = sweep.to_dict()
    check_out_dir(out, spec)
    exp_dir = out / EXPERIMENT
    if resume:
        if not Tuner.can_restore(exp_dir):
            raise ConfigError(f"--resume: no sweep to resume in {exp_dir}")
        refuse_changed(out, spec, "--resume")
        if whole_pickle(exp_dir / TUNER_FILE):  # an incomplete one is written again, not read
            check_state(out, trust_state, say=lambda line: print(line, file=sys.stderr))
    elif Tuner.can_restore(exp_dir):
        raise ConfigError(f"{out} already holds a sweep; pass --resume to continue it or choose "
                          "another --out")


def _trials(sweep: SweepConfig, checked: CheckedSweep, out: Path,
            nodes: list[dict[str, Any]]) -> tuple[Any, ...]:
    """(trainable, param space, TuneConfig, rungs actor or None): a trial per config, or a trial
    per pack of configs with the actor that holds the rungs of every member."""
    from ray import tune

    resources = {"cpu": sweep.resources.cpus, "gpu": sweep.resources.gpus}
    if sweep.pack == 1:
        trainable = tune.with_parameters(run_trial, sweep=sweep.to_dict())
        return (tune.with_resources(trainable, resources), param_space(sweep),
                _tune_config(sweep, checked), None)
    from sae_lab.sweep.packs import pack_trials

    return pack_trials(sweep, checked, out, nodes)


def run_or_resume(sweep: SweepConfig, out: str | Path, progress: bool = True,
                  verbose: int = 0, trust_state: bool = False) -> tuple[SweepResult, str]:
    """(result, what happened: "reused", "resumed" or "ran"): reuse the finished sweep in `out`,
    resume an interrupted one, or start it. progress=True prints a line per trial event while
    Tune runs quietly (verbose=1 and 2 are Tune's own status tables). A sweep stopped part-way
    (Ctrl-C, SIGTERM, a time budget) returns with unfinished trials; running again continues.
    trust_state: see run_sweep."""
    from ray.tune import Tuner

    out = Path(out).resolve()
    check_out_dir(out, sweep.to_dict())
    refuse_changed(out, sweep.to_dict(), str(out))
    resume = Tuner.can_restore(out / EXPERIMENT)
    if resume and (out / "results.csv").is_file():
        done = load_result(out, sweep)
        if done.trials and all(t.status in FINISHED for t in done.trials):
            bench_sweep(done, sweep)
            return done, "reused"
    if resume:
        print(f"resuming the interrupted sweep in {out} (finished trials are not run again)",
              flush=True)
    if progress and not verbose:
        print(f"TensorBoard: tensorboard --logdir {out / EXPERIMENT}", flush=True)
        with trial_progress.printing(out, local_trials(sweep)):
            result = run_sweep(sweep, out, resume=resume, verbose=0, trust_state=trust_state)
    else:
        result = run_sweep(sweep, out, resume=resume, verbose=verbose, trust_state=trust_state)
    bench_sweep(result, sweep)
    return result, "resumed" if resume else "ran"


def local_trials(sweep: SweepConfig) -> int:
    """Tune trials the sweep runs on this machine: one per SAE, or one per pack."""
    if sweep.pack == 1:
        return sweep.num_trials
    from sae_lab.sweep.packs import local_packs

    return local_packs(sweep)


def _sigterm_as_sigint() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))


def _tune_config(sweep: SweepConfig, checked: CheckedSweep):
    from ray import tune

    return tune.TuneConfig(
        metric=sweep.metric, mode=sweep.mode,
        search_alg=build_search_alg(sweep), scheduler=build_scheduler(sweep, checked),
        num_samples=sweep.num_trials if sweep.search == "optuna" else sweep.num_samples,
        # the built-in generator takes max_concurrent itself (Tune ignores this for it)
        max_concurrent_trials=(sweep.max_concurrent or None) if sweep.search == "optuna" else None,
        reuse_actors=sweep.reuse_actors,
        trial_name_creator=trial_name, trial_dirname_creator=trial_name,
    )


def _run_config(sweep: SweepConfig, out: Path, verbose: int):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return tune.RunConfig(
        name=EXPERIMENT, storage_path=str(out), verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        # The latest checkpoint is the one the last reported metrics belong to.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
        sync_config=tune.SyncConfig(sync_artifacts=True),
        # Tune's own JSON and CSV loggers, given here so that it adds no TensorBoard logger of
        # its own (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): that one prints a `tensorboard --logdir`
        # of Ray's session folder; the trials' TensorBoard logs are under OUT/tune.
        callbacks=[EventLog(str(out / "events.jsonl")), JsonLoggerCallback(),
                   CSVLoggerCallback()],
    )


@contextmanager
def _without_tune_tensorboard(active: bool) -> Iterator[None]:
    """While Tune runs a sweep whose run config lists its loggers: no logger added by Tune."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    old = os.environ.get(key)
    if active:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class _TrialTracebacks(logging.Filter):
    """Tune logs every failed try of a trial with Ray's traceback (a hundred lines each); the
    sweep records the error (error.txt, results.csv) and sums the failures up at the end."""

    DROPPED = ("Trial task failed for trial", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and \
                is_disk_full(record.exc_info[1]):
            return False  # the sweep ends with one DiskFullError instead
        return not str(record.msg).startswith(self.DROPPED)


@contextmanager
def _no_trial_tracebacks() -> Iterator[None]:
    loggers = [logging.getLogger(f"ray.tune.{n}") for n in (
        "execution.tune_controller", "tune", "execution.experiment_state")]
    quiet = _TrialTracebacks()
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


@contextmanager
def _disk_full_names(exp_dir: Path) -> Iterator[None]:
    """A disk that filled while Tune ran (Tune then trips over its own empty error.pkl, EOFError)
    is one DiskFullError naming the sweep's folder, with what was half-written removed."""
    try:
        yield
    except Exception as e:
        # Only a full disk, or Tune tripping over an error.pkl it left empty or cut short: any
        # other error is the user's to see as it is, and the files it leaves are not touched.
        if not is_disk_full(e) and not isinstance(e, (EOFError, pickle.UnpicklingError)):
            raise
        removed = remove_partial_files(exp_dir, say=_note)
        if is_disk_full(e) or removed:
            raise disk_full_error(exp_dir, checkpoint_bytes(exp_dir),
                                  remedy="free some space and continue with --resume") from e
        raise


def checkpoint_bytes(exp_dir: Path) -> int | None:
    """What one more checkpoint of every trial needs: the largest checkpoint in the sweep
    times the trials."""
    sizes = [sum(f.stat().st_size for f in c.rglob("*") if f.is_file())
             for c in exp_dir.glob("*/checkpoint_*") if c.is_dir()]
    trials = sum(1 for t in exp_dir.iterdir() if t.is_dir()) if exp_dir.is_dir() else 0
    return max(sizes, default=0) * max(1, trials) or None


def finish(grid: Any, sweep: SweepConfig, out: Path) -> SweepResult:
    """write_report (and, with wandb in the loggers, the W&B summary run of a finished sweep),
    unless a trial ran out of disk space: then what it half-wrote is removed and a DiskFullError
    says where and how much is needed."""
    if any(r.error is not None and is_disk_full(r.error) for r in grid):
        exp_dir = out / EXPERIMENT
        remove_partial_files(exp_dir, say=_note)
        raise disk_full_error(exp_dir, checkpoint_bytes(exp_dir),
                              remedy="free some space and continue with --resume")
    result = write_report(grid, sweep, out)
    if not result.unfinished:
        _log_summary(result, sweep, out)
    return result


def _log_summary(result: SweepResult, sweep: SweepConfig, out: Path) -> None:
    """The W&B summary run (sae_lab.sweep.tracking). The report is written by now: a tracker
    that fails (offline, quota) costs a note, not the sweep."""
    from sae_lab.sweep.tracking import log_summary

    try:
        log_summary(result, sweep, out)
    except Exception as e:
        _note(f"W&B summary run not logged ({type(e).__name__}: {e})")


def _note(line: str) -> None:
    print(f"note: {line}", flush=True)


def trial_name(trial: Any) -> str:
    return f"{architecture_of(trial.config)}_{trial.trial_id}"


def _record_spec(sweep: SweepConfig, out: Path) -> None:
    """Keep the sweep as launched (a resume must use the same one), and claim the folder."""
    out.mkdir(parents=True, exist_ok=True)
    mark(out)
    atomic_write_text(out / "sweep.yaml", yaml.safe_dump(sweep.to_dict(), sort_keys=False))


class EventLog(Callback):
    """Driver-side log of trial starts, retries, completions and errors: events.jsonl."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, event: str, trial: Any, **extra: Any) -> None:
        line = {"time": time.time(), "event": event, "trial": trial.trial_id, **extra}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        trial_progress.report(event, trial.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._write("start", trial)

    def on_trial_restore(self, iteration, trials, trial, **info) -> None:
        self._write("restore", trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._write("complete", trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._write("retry", trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write("error", trial)

