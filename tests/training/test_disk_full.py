"""A full disk: one line naming the path and the space needed, and no partial file left where a
loader (train --resume, sweep --resume) would find it. The disk is filled by a patched writer
that raises ENOSPC after a set number of bytes, as a full filesystem does."""

from __future__ import annotations

import errno
import io
import json
import zipfile

import pytest
import torch
from helpers.tiny import make_sae
from helpers.train_config import tiny
from safetensors import SafetensorError

import sae_lab.export
import sae_lab.files
from sae_lab.cli import main
from sae_lab.files import DiskFullError, atomic_write_bytes
from sae_lab.sweep.recover import complete_checkpoint, newest_complete
from sae_lab.training.run import train


class FillingFile(io.FileIO):
    """A file on a disk with `room` bytes left (shared by every file opened through `opener`)."""

    def __init__(self, path, mode, room: list[int]):
        super().__init__(path, mode)
        self.room = room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room[0]:
            super().write(data[: self.room[0]])
            self.room[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room[0] -= len(data)
        return super().write(data)


def fill_disk(monkeypatch, room: int, only: str = "") -> None:
    """Writes through sae_lab.files to names containing `only` find `room` bytes free."""
    left = [room]

    def opener(path, mode="r", *args, **kwargs):
        if "w" in mode and only in str(path):
            return FillingFile(path, mode.replace("b", ""), left)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(sae_lab.files, "open", opener, raising=False)


def one_line_error(argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_atomic_write_on_a_full_disk_names_path_and_space_and_leaves_nothing(tmp_path,
                                                                              monkeypatch):
    fill_disk(monkeypatch, room=100)
    target = tmp_path / "metrics.json"
    with pytest.raises(DiskFullError) as e:
        atomic_write_bytes(target, b"x" * 5_000_000)
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and "\n" not in msg
    assert f"no space left on device writing {target} (needs ~5.0 MB, " in msg and " free)" in msg
    assert list(tmp_path.iterdir()) == []


def test_export_onto_a_full_disk_is_one_line_and_leaves_no_partial_export(tmp_path, capsys,
                                                                          monkeypatch):
    sae_dir = make_sae(d_in=8, d_sae=16, arch="relu").save(tmp_path / "sae")

    def save_file(tensors, path, metadata=None):  # safetensors reports ENOSPC in its own words
        open(path, "wb").write(b"\0" * 100)
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                              'StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(sae_lab.export, "save_file", save_file)
    out = tmp_path / "sl"
    msg = one_line_error(["export", str(sae_dir), "--format", "saelens", "--out", str(out)],
                         capsys)
    assert msg.startswith(f"sae-lab export: error: no space left on device writing "
                          f"{out} ("), msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no partial export, no temp


def test_training_checkpoint_on_a_full_disk_leaves_only_whole_checkpoints(tmp_path,
                                                                          monkeypatch):
    cfg = tiny(tmp_path, max_tokens=256 * 30, val_every_steps=10)
    writes = []
    real = sae_lab.files.atomic_write_bytes

    def count(path, data):  # the disk fills during the second checkpoint write
        if str(path).endswith(".ckpt"):
            writes.append(path)
            if len(writes) == 2:
                fill_disk(monkeypatch, room=len(data) // 2, only=".ckpt")
        return real(path, data)

    monkeypatch.setattr("sae_lab.training.checkpoint_io.atomic_write_bytes", count)
    with pytest.raises(DiskFullError, match=r"no space left on device writing .*\.ckpt \(needs ~"):
        train(cfg)
    ckpts = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts and all(p.suffix == ".ckpt" for p in ckpts), ckpts  # no temporary left
    for p in ckpts:  # each one loads: none truncated
        assert torch.load(p, map_location="cpu", weights_only=True)["global_step"] == 10


def test_sweep_resume_skips_empty_and_truncated_checkpoints(tmp_path):
    """What --resume looks for: the newest checkpoint_NNNNNN whose files are all whole."""
    trial = tmp_path / "pack000"
    for i, damage in enumerate(["none", "none", "empty", "truncated"]):
        ckpt = trial / f"checkpoint_{i:06d}"
        ckpt.mkdir(parents=True)
        buffer = io.BytesIO()
        torch.save({"step": i}, buffer)
        data = buffer.getvalue()
        data = {"none": data, "empty": b"", "truncated": data[: len(data) // 2]}[damage]
        (ckpt / "trainer.ckpt").write_bytes(data)
        (ckpt / "members.json").write_text(json.dumps({"tokens": i}))
    assert zipfile.is_zipfile(trial / "checkpoint_000001" / "trainer.ckpt")
    assert [complete_checkpoint(trial / f"checkpoint_{i:06d}") for i in range(4)] == \
        [True, True, False, False]
    assert newest_complete(trial) == trial / "checkpoint_000001"
    (trial / "checkpoint_000001" / "members.json").write_text("")  # a zero-byte JSON
    assert newest_complete(trial) == trial / "checkpoint_000000"
