"""sae_lab.files: atomic writes that never replace a directory they did not write, clean up after
interrupted runs, and honour the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.export import export_saelens
from sae_lab.files import (
    MARKER,
    OutputDirError,
    atomic_dir,
    atomic_write_json,
    check_output_dir,
    recover,
)


def small_sae():
    return make_sae(d_in=8, d_sae=16, arch="relu")


def test_export_refuses_a_directory_holding_other_files(tmp_path, capsys):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "thesis.tex").write_text("hi\n")
    with pytest.raises(OutputDirError, match="thesis|src"):
        export_saelens(small_sae(), proj)
    assert (proj / "src" / "thesis.tex").read_text() == "hi\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no temp dir left

    sae_dir = tmp_path / "sae"
    small_sae().save(sae_dir)
    with pytest.raises(SystemExit) as exc:
        main(["export", str(sae_dir), "--out", str(proj)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sae-lab export: error: ") and "proj" in err[0]
    assert (proj / "src" / "thesis.tex").is_file()


def test_inspect_output_refuses_a_sweep(tmp_path):
    from sae_lab.reading.browser import write_browser

    sweep = tmp_path / "sweeps" / "x"
    sweep.mkdir(parents=True)
    (sweep / "results.csv").write_text("trial\n")
    with pytest.raises(OutputDirError):
        write_browser([], sweep, "s")
    assert (sweep / "results.csv").is_file()


def test_earlier_outputs_are_replaced(tmp_path):
    out = tmp_path / "x"
    export_saelens(small_sae(), out)
    assert json.loads((out / MARKER).read_text())["command"] == "export"
    export_saelens(small_sae(), out)  # carries the marker
    (out / MARKER).unlink()
    export_saelens(small_sae(), out)  # an export written before the marker existed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "cfg.json", "sae_weights.safetensors"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    # another command's output is not ours to replace
    from sae_lab.reading.browser import write_browser

    with pytest.raises(OutputDirError, match="export"):
        write_browser([], out, "s")


def test_empty_or_missing_directory_is_fine(tmp_path):
    check_output_dir(tmp_path / "missing", "export")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "export")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="not a plain directory"):
        check_output_dir(tmp_path / "file", "export")


def test_leaked_temp_dirs_of_dead_runs_are_removed(tmp_path):
    # A process that has exited: its pid names a leaked temp dir.
    pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    leaked = tmp_path / f".x.{pid}.abcd_123"
    (leaked / "big").mkdir(parents=True)
    mine = tmp_path / f".x.{os.getpid()}.live_run"  # a live writer's: kept
    mine.mkdir()
    export_saelens(small_sae(), tmp_path / "x")
    assert not leaked.exists()
    assert mine.exists()


def test_crash_between_renames_is_recovered(tmp_path, capsys):
    out = tmp_path / "x"
    export_saelens(small_sae(), out)
    before = (out / "sae_weights.safetensors").read_bytes()
    os.replace(out, tmp_path / ".x.old")  # killed after the first rename of replace_dir
    recover(out)
    assert (out / "sae_weights.safetensors").read_bytes() == before
    assert "restored" in capsys.readouterr().err
    # .x.old beside a complete x: a crash after the second rename; removed on the next write
    (tmp_path / ".x.old").mkdir()
    export_saelens(small_sae(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "x") as tmp:
        (tmp / "a").write_text("a")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        export_saelens(small_sae(), tmp_path / "x")
        atomic_write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(tmp_path / "x") == 0o755
    assert mode(tmp_path / "x" / "cfg.json") == 0o644
    assert mode(tmp_path / "x" / "sae_weights.safetensors") == 0o644  # save_file makes 0600
    assert mode(tmp_path / "m.json") == 0o644
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_sae_save_replaces_an_sae_but_not_other_files(tmp_path):
    sae = small_sae()
    sae.save(tmp_path / "s")
    (tmp_path / "s" / "eval").mkdir()  # what `sae-lab eval` adds: still an SAE directory
    sae.save(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "cfg.json", "sae_weights.safetensors"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(OutputDirError, match="todo.txt"):
        sae.save(tmp_path / "notes")
    export_saelens(sae, tmp_path / "exp")
    with pytest.raises(OutputDirError, match="export"):
        sae.save(tmp_path / "exp")


def test_old_style_temp_dirs_are_removed_only_when_old_and_ours(tmp_path):
    import time

    legacy = tmp_path / ".x.k2j4_9ab"  # mkdtemp(prefix=".x.") of earlier versions
    (legacy).mkdir()
    (legacy / "sae_weights.safetensors").write_bytes(b"0" * 10)
    backup = tmp_path / ".x.backup12"  # a user's directory that happens to look alike
    backup.mkdir()
    (backup / "notes.txt").write_text("keep")
    fresh = tmp_path / ".x.abcdefgh"
    fresh.mkdir()
    day_ago = time.time() - 86400
    for p in (legacy, backup):
        os.utime(p, (day_ago, day_ago))
    recover(tmp_path / "x", known=("cfg.json", "sae_weights.safetensors"))
    assert not legacy.exists()
    assert backup.exists() and fresh.exists()
