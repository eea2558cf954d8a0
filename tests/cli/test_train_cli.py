"""`sae-lab train` as a user meets it: run directories, --resume checks, Ctrl-C, progress output,
--print-config, final metrics on the whole held-out set, non-finite held-out rows."""

from __future__ import annotations

import math
import os
import pickle
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from sae_lab.cli import main
from sae_lab.training.config import TrainConfig

TINY = {
    "sae": {"architecture": "topk", "k": 4, "expansion_factor": 4},
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 2048}},
    "batch_size": 128,
    "max_tokens": 128 * 10,
    "val_every_steps": 5,
    "val_batches": 1,
    "progress_bar": False,
}


def write_config(tmp_path, **over) -> str:
    cfg = {**TINY, "out_dir": str(tmp_path / "run"), **over}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def run(argv, capsys) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_existing_run_dir_is_refused_without_resume(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert run(["train", cfg], capsys)[0] == 0
    saved = (tmp_path / "run" / "config.yaml").read_bytes()
    code, _, err = run(["train", cfg, "--set", "lr=0.001"], capsys)
    assert code == 2 and "--resume" in one_line(err) and "already holds a run" in err
    assert (tmp_path / "run" / "config.yaml").read_bytes() == saved
    assert not list((tmp_path / "run" / "checkpoints").glob("last-v*"))


def test_resume_with_a_changed_config_is_refused_before_writing(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert run(["train", cfg], capsys)[0] == 0
    saved = (tmp_path / "run" / "config.yaml").read_bytes()
    code, _, err = run(["train", cfg, "--set", "lr=0.001", "--resume"], capsys)
    assert code == 2 and re.search(r"lr: 0\.0004 -> 0\.001", one_line(err))
    assert (tmp_path / "run" / "config.yaml").read_bytes() == saved
    # a longer run is a resumable change
    code, out, _ = run(["train", cfg, "--set", "max_tokens=1536", "--resume"], capsys)
    assert code == 0 and "tokens=1536" in out


def test_resuming_a_run_from_before_token_norm_names_it(tmp_path, capsys):
    """A config.yaml written before sae.token_norm existed holds no such key: that run was
    trained without it, so resuming under today's default (on for relu) must not go ahead."""
    cfg = write_config(tmp_path, sae={"architecture": "relu", "expansion_factor": 4})
    assert run(["train", cfg], capsys)[0] == 0
    saved_path = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(saved_path.read_text())
    assert saved["sae"].pop("token_norm") is True
    saved_path.write_text(yaml.safe_dump(saved))
    code, _, err = run(["train", cfg, "--resume"], capsys)
    assert code == 2 and "sae.token_norm: False -> True" in one_line(err)
    code, _, _ = run(["train", cfg, "--set", "sae.token_norm=false", "--resume"], capsys)
    assert code == 0


def test_resume_on_data_of_another_width_is_refused_before_writing(tmp_path, capsys):
    npy = tmp_path / "acts.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((2048, 8)).astype(np.float32))
    cfg = write_config(tmp_path, data={"npy": str(npy)})
    assert run(["train", cfg], capsys)[0] == 0
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    np.save(npy, np.random.default_rng(0).standard_normal((2048, 12)).astype(np.float32))
    code, _, err = run(["train", cfg, "--resume"], capsys)
    assert code == 2 and "d_in=8" in one_line(err) and "d_in=12" in err
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert after == before  # config.yaml, final/, checkpoints: nothing overwritten


class _Crafted:
    def __reduce__(self):
        return (print, ("CRAFTED CODE RAN",))


def test_crafted_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert run(["train", cfg], capsys)[0] == 0
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps(_Crafted()))
    code, out, err = run(["train", cfg, "--resume"], capsys)
    assert code == 2 and "last.ckpt" in one_line(err) and "safe" in err
    assert "CRAFTED CODE RAN" not in out + err


def test_ctrl_c_exits_130_with_the_command_that_continues(tmp_path, capsys, monkeypatch):
    from sae_lab.training import run as run_mod

    plain = run_mod.StopOnInterrupt.on_train_batch_end

    def ctrl_c_at_step_3(self, trainer, *args):
        if trainer.global_step == 3 and not self.requested:
            os.kill(os.getpid(), signal.SIGINT)
        plain(self, trainer, *args)

    monkeypatch.setattr(run_mod.StopOnInterrupt, "on_train_batch_end", ctrl_c_at_step_3)
    cfg = write_config(tmp_path)
    code, _, err = run(["train", cfg, "--set", "seed=1"], capsys)
    assert code == 130
    assert "interrupted at step 3;" in err
    assert f"continue with: sae-lab train {cfg} --set seed=1 --resume" in one_line(err)
    monkeypatch.setattr(run_mod.StopOnInterrupt, "on_train_batch_end", plain)
    code, out, _ = run(["train", cfg, "--set", "seed=1", "--resume"], capsys)
    assert code == 0 and "tokens=1280" in out


@pytest.mark.slow
def test_real_sigint_exits_130(tmp_path):
    cfg = write_config(tmp_path, max_tokens=128 * 2000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sae_lab.cli", "train", cfg],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("step "):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "continue with: sae-lab train" in err and "--resume" in err
    assert "Traceback" not in err
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_output_to_a_file_has_a_line_per_validation_and_no_banners(tmp_path, capfd):
    code = 0
    try:
        main(["train", write_config(tmp_path)])
    except SystemExit as e:
        code = e.code
    out, err = capfd.readouterr()
    assert code == 0
    lines = [x for x in out.splitlines() if x.startswith("step ")]
    assert len(lines) == 2, out
    pattern = r"step 5/10  tokens 640  [\d.]+k? tok/s  fvu \d\.\d{3}  l0 [\d.]+  dead [\d.]+%"
    assert re.fullmatch(pattern, lines[0]), lines[0]
    for noise in ("GPU available", "TPU available", "litlogger", "LeafSpec", "_pytree"):
        assert noise not in out + err, noise


def test_progress_bar_counts_steps_and_shows_loss_and_fvu(tmp_path, capfd, monkeypatch):
    from sae_lab.training import run as run_module
    from sae_lab.training.run import train

    monkeypatch.setattr(run_module, "stdout_is_terminal", lambda: True)

    cfg = TrainConfig.from_dict({**TINY, "progress_bar": True, "log_every_steps": 1,
                                 "out_dir": str(tmp_path / "bar")})
    train(cfg, logger=False, progress_lines=False)
    out = capfd.readouterr().out
    assert "Epoch 0/-2" not in out and "/-2" not in out
    assert re.search(r"train.*10/10.*loss=[\d.]+.*fvu=[\d.]+", out), out[-500:]


def test_print_config_is_reusable_with_another_data_source(tmp_path, capsys, tiny_shards):
    code, printed, _ = run(["train", "--print-config"], capsys)
    assert code == 0 and yaml.safe_load(printed)["data"]["synthetic"] is not None
    (tmp_path / "printed.yaml").write_text(printed)
    code, again, err = run(["train", str(tmp_path / "printed.yaml"),
                            "--set", f"data.shards={tiny_shards}", "--print-config"], capsys)
    assert code == 0, err
    data = yaml.safe_load(again)["data"]
    assert data["shards"] == str(tiny_shards) and data["synthetic"] is None


def test_final_metrics_cover_the_whole_held_out_set(tmp_path, capsys):
    from sae_lab import load
    from sae_lab.training.run import evaluate_rows, make_datamodule

    cfg = write_config(tmp_path, data={"synthetic": {**TINY["data"]["synthetic"],
                                                     "n_tokens": 8192}})
    code, out, _ = run(["train", cfg], capsys)
    assert code == 0
    metrics = yaml.safe_load((tmp_path / "run" / "metrics.json").read_text())
    val = make_datamodule(TrainConfig.from_yaml(cfg)).val_dataloader()
    assert metrics["val_tokens"] == 409  # all held-out rows, not val_batches x batch_size
    whole = evaluate_rows(load(tmp_path / "run" / "final"), val)
    first = evaluate_rows(load(tmp_path / "run" / "final"), val, max_batches=1)
    assert metrics["fvu"] == pytest.approx(whole["fvu"], rel=1e-6)
    assert metrics["fvu"] != pytest.approx(first["fvu"], rel=1e-6)
    assert "final metrics on all 409 held-out rows of synthetic" in out
    assert metrics["held_out"] == "all 409 held-out rows of synthetic"


class _LenientMath:
    """`math` for a writer that lets NaN through (as a shard set from another tool might)."""

    def __getattr__(self, name):
        return getattr(math, name)

    @staticmethod
    def isfinite(x) -> bool:
        return True


@pytest.fixture
def nan_shards(tmp_path, monkeypatch):
    """3 shards of 1024 rows, d=8; row 100 of the held-out shard (shard-000002) is NaN."""
    from sae_lab.data import shards
    from sae_lab.data.shards import ShardSetWriter

    monkeypatch.setattr(shards, "math", _LenientMath())

    n, d = 3072, 8
    acts = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    acts[2148, 3] = float("nan")
    w = ShardSetWriter(tmp_path / "nan-acts", {"model": "m", "layer": 0, "hook": "resid_post"},
                       "float32", 1024, 1024)
    w.add(0, acts, torch.zeros(n, dtype=torch.int32), torch.zeros(n, dtype=torch.long),
          torch.arange(n, dtype=torch.int32))
    w.finish()
    monkeypatch.undo()
    return tmp_path / "nan-acts"


def test_non_finite_held_out_row_is_an_error_naming_its_shard(tmp_path, capsys, nan_shards):
    cfg = write_config(tmp_path, data={"shards": str(nan_shards), "shuffle_buffer": 256})
    code, _, err = run(["train", cfg], capsys)
    assert code == 2
    assert "NaN or inf" in one_line(err) and "shard-000002.tar row 100" in err
    assert not (tmp_path / "run" / "final").exists()


def test_non_finite_held_out_rows_skipped_and_counted_when_asked(tmp_path, nan_shards):
    from sae_lab.training.run import train

    cfg = TrainConfig.from_dict({**TINY, "data": {"shards": str(nan_shards)}, "val_batches": 0,
                                 "nan_policy": "skip", "out_dir": str(tmp_path / "skip")})
    result = train(cfg, logger=False)
    assert result.metrics["skipped_val_rows"] == 1 and result.metrics["val_tokens"] == 1023
    assert np.isfinite(result.metrics["fvu"])
    assert "1 non-finite rows skipped" in result.held_out


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_that_failed_before_its_first_checkpoint_is_taken_over(tmp_path, capsys, resume):
    npy = tmp_path / "acts.npy"
    rows = np.random.default_rng(0).standard_normal((2048, 8)).astype(np.float32)
    np.save(npy, np.full_like(rows, np.nan))
    cfg = write_config(tmp_path, data={"npy": str(npy)})
    code, _, err = run(["train", cfg], capsys)
    run_dir = tmp_path / "run"
    assert code == 2 and "step 0: non-finite batch" in err, err  # before any checkpoint
    assert (run_dir / "config.yaml").is_file() and not list(run_dir.rglob("*.ckpt"))
    np.save(npy, rows)
    code, out, err = run(["train", cfg, *(["--resume"] if resume else [])], capsys)
    assert code == 0, err
    assert f"taking over {run_dir}: it holds no checkpoint" in err.splitlines()
    assert (run_dir / "final" / "cfg.json").is_file() and "saved:" in out
    # once it has checkpointed, the directory is a run again
    code, _, err = run(["train", cfg], capsys)
    assert code == 2 and "already holds a run" in one_line(err)


def test_output_to_a_file_has_no_progress_bar(tmp_path, capfd):
    """stdout (and stderr) redirected to files, as `sae-lab train c.yaml > log` does: the bar's
    carriage returns stay out; the log is a line per validation."""
    from sae_lab.training.run import train

    cfg = TrainConfig.from_dict({**TINY, "progress_bar": True, "max_tokens": 128 * 60,
                                 "val_every_steps": 20, "out_dir": str(tmp_path / "log")})
    train(cfg, logger=False)
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    assert len(out) + len(err) < 1500, out + err
    assert [ln.split("/")[0] for ln in out.splitlines()[1:]] == ["step 20", "step 40", "step 60"]
