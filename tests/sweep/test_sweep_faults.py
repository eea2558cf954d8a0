"""A sweep's faults: someone else's files in --out, a full disk, an all-failing sweep, a resume
with changed settings or a Tune state the sweep cannot vouch for. Each refusal is one line and
comes before anything runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sae_lab.config import ConfigError
from sae_lab.files import MARKER, DiskFullError, OutputDirError
from sae_lab.sweep.schema import sweep_from_dict


def tiny(**overrides) -> dict:
    """Two trials on 16-dim synthetic data, 8 steps each, a checkpoint every 2."""
    d = {
        "name": "faults",
        "base": {"data": {"synthetic": {"d": 16, "n_features": 32, "active": 3,
                                        "n_tokens": 4096}},
                 "batch_size": 128, "max_tokens": 1024, "val_every_steps": 2,
                 "lr": 3e-3, "lr_warmup_steps": 1, "sae": {"expansion_factor": 2}},
        "architectures": ["relu"],
        "space": {"relu": {"sparsity_coef": {"grid": [0.5, 2.0]}}},
        "scheduler": {"type": "none"}, "search": "grid", "resources": {"cpus": 1},
        "max_failures": 0, "pack": 1,
    }
    d.update(overrides)
    return d


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if the sweep gets as far as starting Ray."""
    import ray

    class Started(Exception):
        pass

    def refuse(*a, **k):
        raise Started("Ray was started")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    return Started


def a_started_sweep(out: Path, d: dict, tuner: bytes = b"\x80\x04N.") -> None:
    """`out` as a sweep leaves it when it was stopped: its sweep.yaml, marker and tuner.pkl."""
    from sae_lab.sweep.outdir import mark, record_state

    out.mkdir(parents=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep_from_dict(d).to_dict()))
    (out / "tune").mkdir()
    (out / "tune" / "tuner.pkl").write_bytes(tuner)
    mark(out)
    record_state(out)


# --- a folder of the user's files ---------------------------------------------------------


def test_a_folder_of_the_users_files_is_refused_before_anything_runs(tmp_path, no_ray):
    from sae_lab.sweep.run import run_or_resume, run_sweep

    out = tmp_path / "D"
    (out / "best").mkdir(parents=True)
    (out / "results.csv").write_text("mine\n")
    (out / "best" / "x").write_text("mine\n")
    sweep = sweep_from_dict(tiny())
    for run in (lambda: run_sweep(sweep, out, verbose=0), lambda: run_or_resume(sweep, out)):
        with pytest.raises(OutputDirError, match=r"D: exists and holds files sae_lab did not "
                                                 r"write \(best, results.csv\)") as e:
            run()
        assert "\n" not in str(e.value)
    assert sorted(p.name for p in out.rglob("*")) == ["best", "results.csv", "x"]
    assert (out / "results.csv").read_text() == "mine\n"
    # the user's own sweep.yaml in --out is theirs too, not a record of a sweep
    own = tmp_path / "E"
    own.mkdir()
    (own / "sweep.yaml").write_text("# my notes\nname: faults\n")
    with pytest.raises(OutputDirError, match="files sae_lab did not write"):
        run_sweep(sweep, own, verbose=0)
    # a sweep's own folder is accepted (and goes on to start Ray), unless best/ holds strangers
    ours = tmp_path / "ours"
    a_started_sweep(ours, tiny())
    with pytest.raises(no_ray):
        run_sweep(sweep, ours, resume=True, verbose=0)
    (ours / "best").mkdir()
    (ours / "best" / "x").write_text("mine\n")
    with pytest.raises(OutputDirError, match="best: exists and holds files sae_lab did not"):
        run_sweep(sweep, ours, resume=True, verbose=0)


# --- resume: what changed, and whose state it is -------------------------------------------


def test_resume_with_a_changed_setting_names_it(tmp_path, no_ray):
    from sae_lab.sweep.run import run_or_resume, run_sweep

    out = tmp_path / "out"
    a_started_sweep(out, tiny())
    changed = tiny(max_failures=2)
    changed["base"]["lr"] = 1e-3
    with pytest.raises(ConfigError) as e:
        run_sweep(sweep_from_dict(changed), out, resume=True, verbose=0)
    msg = str(e.value)
    assert "base.lr: 0.003 -> 0.001" in msg and "max_failures: 0 -> 2" in msg, msg
    assert "\n" not in msg and str(out / "sweep.yaml") in msg
    with pytest.raises(ConfigError, match=r"base.lr: 0.003 -> 0.001; max_failures: 0 -> 2"):
        run_or_resume(sweep_from_dict(changed), out)


def test_resume_refuses_a_tune_state_the_sweep_did_not_write(tmp_path, no_ray, capsys):
    from sae_lab.sweep.outdir import SweepStateError
    from sae_lab.sweep.run import run_sweep

    sweep = sweep_from_dict(tiny())
    out = tmp_path / "out"
    a_started_sweep(out, tiny())
    pkl = out / "tune" / "tuner.pkl"
    pkl.write_bytes(b"\x80\x04K\x01.")  # another pickle than the one recorded
    with pytest.raises(SweepStateError, match=r"tuner.pkl changed since the sweep wrote it.*"
                                              r"trust_state=True") as e:
        run_sweep(sweep, out, resume=True, verbose=0)
    assert "\n" not in str(e.value)
    marker = json.loads((out / MARKER).read_text())
    del marker["tuner_sha256"]
    (out / MARKER).write_text(json.dumps(marker))
    with pytest.raises(SweepStateError, match="was not recorded by a sweep"):
        run_sweep(sweep, out, resume=True, verbose=0)
    # trusted on request: a warning, and the sweep goes on (to start Ray)
    with pytest.raises(no_ray):
        run_sweep(sweep, out, resume=True, verbose=0, trust_state=True)
    assert "warning: resuming although" in capsys.readouterr().err
    with pytest.raises(no_ray):  # vouched for from then on
        run_sweep(sweep, out, resume=True, verbose=0)
    # another user's directory
    os.chown(out, 12345, 12345) if os.getuid() == 0 else pytest.skip("chown needs root")
    with pytest.raises(SweepStateError, match=r"out belongs to uid 12345.*not to you"):
        run_sweep(sweep, out, resume=True, verbose=0)


def test_tune_prints_no_tensorboard_hint_of_its_own(tmp_path):
    """Tune's TensorBoard logger makes it print `tensorboard --logdir <Ray's session folder>`;
    the sweep lists Tune's JSON and CSV loggers itself and keeps that one out."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
    from ray.tune.utils.callback import _create_default_callbacks

    from sae_lab.sweep.run import _run_config, _without_tune_tensorboard

    config = _run_config(sweep_from_dict(tiny()), tmp_path, 1)
    with _without_tune_tensorboard(True):
        callbacks = _create_default_callbacks(list(config.callbacks), air_verbosity=None)
    kinds = {type(c) for c in callbacks}
    assert {JsonLoggerCallback, CSVLoggerCallback} <= kinds and TBXLoggerCallback not in kinds
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ  # put back afterwards


# --- an all-failing sweep -----------------------------------------------------------------


def test_an_all_failing_sweep_ends_with_one_summary(tmp_path):
    from sae_lab.sweep.report import SweepFailedError, SweepResult, TrialRecord

    diverged = ("sae_lab.sweep.trial.TrialError: NonFiniteBatchError: step 1: non-finite loss "
                "(NaN or inf); set nan_policy: skip to skip such batches (on host h, node 1)")
    trials = [TrialRecord(f"relu_{i}", "relu", {"lr": 1e9}, {}, "failed", error=diverged)
              for i in range(3)]
    trials.append(TrialRecord("topk_3", "topk", {}, {}, "failed",
                              error="sae_lab.sweep.trial.TrialError: OSError: bad shard"))
    result = SweepResult(trials, out=tmp_path)
    line = result.failure_summary()
    assert "\n" not in line
    assert line.startswith("all 4 trials failed (3x NonFiniteBatchError: step 1: non-finite "
                           "loss (NaN or inf); the training diverged: lower lr or sparsity_coef")
    assert "1x OSError: bad shard" in line and "nan_policy" not in line
    assert f"{tmp_path}/tune/<trial>/error.txt" in line
    assert result.summary() == "4 trials: 4 failed"  # no "best checkpoints in" an empty best/
    with pytest.raises(SweepFailedError) as e:
        result.raise_if_all_failed()
    assert isinstance(e.value, RuntimeError) and str(e.value) == line


@pytest.mark.slow
def test_an_all_failing_sweep_prints_no_ray_traceback(ray_local, tmp_path, capfd):
    from sae_lab.sweep.run import run_sweep

    d = tiny()
    d["base"]["lr"] = 1e9  # diverges at the first step
    d["space"]["relu"]["sparsity_coef"] = {"grid": [1.0]}
    result = run_sweep(sweep_from_dict(d), tmp_path / "out", verbose=1)
    printed = capfd.readouterr()
    assert result.all_failed and "diverged" in result.failure_summary()
    assert "Traceback" not in printed.out + printed.err
    hints = re.findall(r"tensorboard --logdir (\S+)", printed.out + printed.err)
    assert hints == [str(tmp_path / "out" / "tune")], hints  # ours, not Ray's session folder


# --- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs; skipped where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
            capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves `leave` bytes free on `disk`."""
    ballast = disk / "ballast"
    free = shutil.disk_usage(disk).free
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return ballast


@pytest.fixture
def ray_local():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resume_goes_on(small_disk, ray_local, capfd):
    from sae_lab.sweep.recover import complete_checkpoint
    from sae_lab.sweep.run import run_sweep

    one_trial = tiny()
    one_trial["space"]["relu"]["sparsity_coef"] = {"grid": [1.0]}
    sweep = sweep_from_dict(one_trial)
    out = small_disk / "sweep"
    out.mkdir()
    ballast = fill(small_disk, 160_000)
    with pytest.raises(DiskFullError) as e:
        run_sweep(sweep, out, verbose=0)
    msg = str(e.value)
    assert msg.startswith(f"no space left on device writing {out / 'tune'} (needs ~"), msg
    assert "continue with --resume" in msg and "\n" not in msg
    printed = capfd.readouterr()
    assert "EOFError" not in printed.out + printed.err
    assert "tensorboard --logdir" not in printed.out + printed.err  # not Ray's session folder
    # nothing half-written where a loader would find it
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".ckpt") and p.stat().st_size == 0]
    assert all(complete_checkpoint(c) for c in out.glob("tune/*/checkpoint_*"))
    ballast.unlink()  # space freed
    # had the disk filled as the sweep started, Tune's tuner.pkl would be cut short: written again
    pkl = out / "tune" / "tuner.pkl"
    pkl.write_bytes(pkl.read_bytes()[:50])
    result = run_sweep(sweep, out, resume=True, verbose=0)
    assert [t.status for t in result.trials] == ["done"], result.table()
    assert "tuner.pkl is incomplete (a full disk?); written again" in capfd.readouterr().out


# --- repairing the state before --resume (no Ray cluster) ----------------------------------


def a_checkpoint(directory: Path, tokens: float, whole: bool = True) -> Path:
    directory.mkdir(parents=True)
    (directory / "members.json").write_text(json.dumps({"tokens": tokens}) if whole else "")
    return directory


def a_state(exp_dir: Path, trial: str, named: str | None) -> Path:
    """An experiment state with one paused trial whose latest checkpoint is `named`."""
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    meta = _TrainingRunMetadata()
    meta.checkpoint_manager = _CheckpointManager(CheckpointConfig(num_to_keep=1))
    if named:
        meta.checkpoint_manager.register_checkpoint(_TrainingResult(
            checkpoint=Checkpoint(str(exp_dir / trial / named)), metrics={"tokens": 1.0}))
    path = exp_dir / "experiment_state-2026-01-01_00-00-00.json"
    trial_json = json.dumps({"status": "PAUSED", "relative_logdir": trial})
    path.write_text(json.dumps({"trial_data": [[trial_json, meta.get_json_state()]]}))
    return path


def named_in(state: Path) -> str | None:
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    entry = json.loads(state.read_text())["trial_data"][0]
    latest = _TrainingRunMetadata.from_json_state(entry[1]).checkpoint_manager \
        .latest_checkpoint_result
    return Path(latest.checkpoint.path).name if latest else None


def test_the_newest_checkpoint_takes_the_number_the_state_gives(tmp_path):
    """The state names checkpoint_000000 (gone: Tune deleted it after writing _000001, then the
    driver was killed). Tune will number the next one _000001: the newest complete checkpoint
    must not stay under that name, where it would be written over and then deleted."""
    from sae_lab.sweep.recover import repair_trials

    exp = tmp_path / "tune"
    a_checkpoint(exp / "pack001" / "checkpoint_000001", 1024.0)
    state = a_state(exp, "pack001", "checkpoint_000000")
    lines = repair_trials(exp, say=lambda line: None)
    assert lines and "resumes from the newest complete one, checkpoint_000001" in lines[0]
    assert named_in(state) == "checkpoint_000000"
    left = sorted(p.name for p in (exp / "pack001").iterdir())
    assert left == ["checkpoint_000000"]
    assert json.loads((exp / "pack001/checkpoint_000000/members.json").read_text()) == \
        {"tokens": 1024.0}


def test_a_full_disk_leaves_nothing_half_written_for_resume(tmp_path):
    """Empty pickles (error.pkl), a truncated experiment state and an incomplete checkpoint
    (the one the state names) are set aside; the trial resumes from the one before."""
    from sae_lab.sweep.recover import repair_trials, whole_pickle

    exp = tmp_path / "tune"
    trial = exp / "relu_0"
    a_checkpoint(trial / "checkpoint_000002", 512.0)
    a_checkpoint(trial / "checkpoint_000003", 768.0, whole=False)
    (trial / "error.pkl").write_bytes(b"")
    (trial / "params.pkl").write_bytes(b"\x80\x04\x95")  # cut short
    state = a_state(exp, "relu_0", "checkpoint_000003")
    cut = exp / "experiment_state-2026-02-01_00-00-00.json"  # newer, and cut short
    cut.write_text('{"trial_data": [["')
    repair_trials(exp, say=lambda line: None)
    assert sorted(p.name for p in trial.iterdir()) == ["checkpoint_000003"]
    assert json.loads((trial / "checkpoint_000003/members.json").read_text())["tokens"] == 512.0
    assert named_in(state) == "checkpoint_000003"
    assert not cut.exists() and (exp / (cut.name + ".partial")).is_file()
    assert whole_pickle(exp.parent / "none") is False
    (tmp_path / "ok.pkl").write_bytes(b"\x80\x04K\x01.")
    assert whole_pickle(tmp_path / "ok.pkl")


def test_a_sweep_whose_trials_span_several_workers_is_refused_before_ray(tmp_path, no_ray):
    from sae_lab.sweep.run import run_sweep

    d = tiny()
    d["base"]["parallel"] = {"latents": 2}
    with pytest.raises(ConfigError, match=r"faults: base.parallel asks 2 workers per trial; "
                                          r"sweeps run each trial in one process") as e:
        run_sweep(sweep_from_dict(d), tmp_path / "out", verbose=0)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_a_search_state_cut_short_is_set_aside_for_the_whole_one(tmp_path):
    """Ray copies the driver's files to the sweep folder in the background: a kill mid-copy
    leaves the searcher's state cut short, and Tune would restart the experiment from scratch."""
    from sae_lab.sweep.recover import repair_trials

    exp = tmp_path / "tune"
    exp.mkdir()
    older = exp / "basic-variant-state-2026-01-01_00-00-00.json"
    older.write_bytes(b"\x80\x04K\x01.")
    newer = exp / "basic-variant-state-2026-01-02_00-00-00.json"
    newer.write_bytes(b"\x80\x04\x95")  # cut short
    said: list[str] = []
    repair_trials(exp, say=said.append)
    assert sorted(p.name for p in exp.iterdir()) == [older.name, newer.name + ".partial"]
    assert said == [f"{newer.name} was cut short (the driver was killed while Ray copied it); "
                    "set aside as .partial"]
    older.write_bytes(b"")  # the only one left, and empty: said, not hidden
    repair_trials(exp, say=said.append)
    assert said[-1].startswith("warning: no whole basic-variant-state-*.json is left: Tune will "
                               "start the sweep's trials again")
