"""Shard format: round trips, statistics, resume bookkeeping, and corrupt input."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

import sae_lab
from sae_lab.data.shards import (
    MANIFEST,
    ShardError,
    ShardSetWriter,
    decode_block,
    encode_block,
    iter_blocks,
    read_manifest,
    verify,
)

HEADER = {"model": "m", "revision": None, "tokenizer": "t", "dataset": {"path": "d"},
          "layer": 3, "hook": "resid_post", "ctx_len": 16, "model_dtype": "float32",
          "special_tokens": "excluded"}


def rows(n: int, d: int = 8, start: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, d, generator=g) * 3 + 1
    token_ids = torch.arange(start, start + n, dtype=torch.int32) % 1000
    doc = torch.arange(start, start + n) // 50
    pos = (torch.arange(start, start + n) % 50).to(torch.int32)
    return acts, token_ids, doc, pos


def write(directory, n: int, dtype: str = "float16", shard_rows: int = 2500,
          block_rows: int = 1024, chunk: int = 700):
    w = ShardSetWriter(directory, HEADER, dtype, shard_rows, block_rows)
    acts, token_ids, doc, pos = rows(n)
    for s in range(0, n, chunk):
        w.add(s, acts[s : s + chunk], token_ids[s : s + chunk], doc[s : s + chunk],
              pos[s : s + chunk])
    w.finish()
    return acts, token_ids, doc, pos


def test_round_trip_manifest_and_stats(tmp_path):
    acts, token_ids, doc, pos = write(tmp_path, 6000)
    m = read_manifest(tmp_path)
    assert m["complete"] and m["tokens"] == 6000 and m["d_in"] == 8 and m["dtype"] == "float16"
    assert [s["rows"] for s in m["shards"]] == [2500, 2500, 1000]
    assert [s["blocks"] for s in m["shards"]] == [3, 3, 1]  # 1024 + 1024 + 452 per full shard
    assert m["layer"] == 3 and m["sae_lab_version"] == sae_lab.__version__
    blocks = list(iter_blocks(tmp_path))
    assert [len(b["acts"]) for b in blocks] == [1024, 1024, 452] * 2 + [1000]
    got = {k: torch.cat([b[k] for b in blocks]) for k in ("acts", "token_ids", "doc", "pos")}
    stored = acts.half()
    assert torch.equal(got["acts"], stored)
    assert torch.equal(got["token_ids"], token_ids) and torch.equal(got["doc"], doc)
    assert torch.equal(got["pos"], pos)
    x = stored.double()
    st = m["stats"]
    assert st["rows"] == 6000
    np.testing.assert_allclose(st["mean"], x.mean(0).numpy(), rtol=1e-9, atol=1e-12)
    # Per-row norms are float32 (summed in float64): about 1e-7 relative error.
    assert st["mean_sq_norm"] == pytest.approx(x.pow(2).sum(1).mean().item(), rel=1e-6)
    assert st["mean_norm"] == pytest.approx(x.norm(dim=1).mean().item(), rel=1e-6)
    assert st["var_total"] == pytest.approx((x - x.mean(0)).pow(2).sum(1).mean().item(),
                                            rel=1e-6)
    assert verify(tmp_path) == 6000


def test_bfloat16_and_float32_are_stored_exactly(tmp_path):
    for dtype, torch_dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        acts, *_ = write(tmp_path / dtype, 1500, dtype=dtype, shard_rows=1024)
        got = torch.cat([b["acts"] for b in iter_blocks(tmp_path / dtype)])
        assert got.dtype == torch_dtype and torch.equal(got, acts.to(torch_dtype))


def test_block_checksum_catches_a_flipped_bit():
    data = bytearray(encode_block(*rows(1024)))
    assert torch.equal(decode_block(bytes(data))["token_ids"], rows(1024)[1])
    data[-100] ^= 1
    with pytest.raises(ShardError, match="checksum"):
        decode_block(bytes(data))


def test_resume_skips_rows_already_stored_and_cleans_temp_files(tmp_path):
    acts, token_ids, doc, pos = rows(5000)
    w = ShardSetWriter(tmp_path, HEADER, "float32", 2048, 1024)
    w.add(0, acts[:3000], token_ids[:3000], doc[:3000], pos[:3000])
    w.abort()  # as if killed: one complete shard, the second one half written
    (tmp_path / ".shard-000001.tar.tmp999").write_bytes(b"partial")
    assert read_manifest(tmp_path)["tokens"] == 2048
    w = ShardSetWriter(tmp_path, HEADER, "float32", 2048, 1024)
    assert w.rows == 2048 and not list(tmp_path.glob(".*tmp*"))
    w.add(1000, acts[1000:], token_ids[1000:], doc[1000:], pos[1000:])  # overlaps stored rows
    w.finish()
    got = list(iter_blocks(tmp_path))
    assert torch.equal(torch.cat([b["acts"] for b in got]), acts)
    assert torch.equal(torch.cat([b["pos"] for b in got]), pos)
    with pytest.raises(ValueError, match="gap"):
        ShardSetWriter(tmp_path / "x", HEADER, "float32", 2048, 1024).add(5, *rows(10))


def test_resume_with_other_settings_names_the_field(tmp_path):
    write(tmp_path, 1200, shard_rows=1024)
    with pytest.raises(ShardError, match=r"dtype='float16' but this harvest has dtype='float32'"):
        ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024)
    with pytest.raises(ShardError, match=r"layer=3 but this harvest has layer=4"):
        ShardSetWriter(tmp_path, {**HEADER, "layer": 4}, "float16", 1024, 1024)


def test_small_blocks_are_refused(tmp_path):
    with pytest.raises(ShardError, match="block_rows=512"):
        ShardSetWriter(tmp_path, HEADER, "float16", 4096, 512)


def _members(path):
    with tarfile.open(path) as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers()]


def test_truncated_shard_names_the_shard(tmp_path):
    write(tmp_path, 3000, shard_rows=3000)
    shard = tmp_path / "shard-000000.tar"
    data = shard.read_bytes()
    (name, offset, size), *_ = _members(shard)
    # Cut exactly at a member boundary (tar readers see a clean end), then inside a member.
    boundary = offset + -(-size // 512) * 512
    for cut in (boundary, offset + size // 2):
        shard.write_bytes(data[:cut])
        with pytest.raises(ShardError, match="shard-000000.tar") as e:
            list(iter_blocks(tmp_path))
        assert " object at 0x" not in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).endswith(f"(unexpected end of data @ {shard})")
    shard.write_bytes(b"")
    with pytest.raises(ShardError, match="shard-000000.tar"):
        list(iter_blocks(tmp_path))


def test_corrupt_shard_names_the_shard(tmp_path):
    write(tmp_path, 3000, shard_rows=3000)
    shard = tmp_path / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    (_, offset, size), *_ = _members(shard)
    data[offset + size - 10] ^= 0xFF  # inside the activations of the first block
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"shard-000000.tar.*checksum"):
        list(iter_blocks(tmp_path))
    with pytest.raises(ShardError, match=r"shard-000000.tar.*sha256"):
        verify(tmp_path)


def test_manifest_that_disagrees_with_the_rows_names_both(tmp_path):
    write(tmp_path, 1200, shard_rows=1200, block_rows=1024)
    m = json.loads((tmp_path / MANIFEST).read_text())
    for key, value, pattern in (("d_in", 16, r"d_in=8, manifest says d_in=16"),
                                ("dtype", "float32", r"float16, manifest says dtype=float32")):
        (tmp_path / MANIFEST).write_text(json.dumps({**m, key: value}))
        with pytest.raises(ShardError, match=pattern):
            list(iter_blocks(tmp_path))


def test_missing_or_foreign_manifest(tmp_path):
    with pytest.raises(ShardError, match="cannot read shard manifest"):
        read_manifest(tmp_path)
    write(tmp_path / "layer_2", 1100, shard_rows=1100)
    with pytest.raises(ShardError, match=r"use one of its layer directories \['layer_2'\]"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text('{"hello": 1}')
    with pytest.raises(ShardError, match="not an sae_lab shard manifest"):
        read_manifest(tmp_path)


def test_float16_overflow_is_an_error_not_inf_rows(tmp_path):
    w = ShardSetWriter(tmp_path, HEADER, "float16", 1024, 1024)
    acts, token_ids, doc, pos = rows(1024)
    acts[5, 2] = 1e5  # above float16's largest finite value, 65504
    with pytest.raises(ShardError, match=r"non-finite activations .*float16.*bfloat16"):
        w.add(0, acts, token_ids, doc, pos)
    w.abort()
    assert not (tmp_path / MANIFEST).exists() and not list(tmp_path.glob("*.tar"))


def test_shard_swapped_for_another_valid_one_is_caught_while_streaming(tmp_path):
    from sae_lab.data.shards import read_shard

    write(tmp_path, 4096, shard_rows=2048)  # two shards of two blocks each
    m = read_manifest(tmp_path)
    assert [s["blocks"] for s in m["shards"]] == [2, 2]
    first, second = tmp_path / "shard-000000.tar", tmp_path / "shard-000001.tar"
    second.write_bytes(first.read_bytes())  # valid tar, valid blocks, right row count
    got = []
    with pytest.raises(ShardError, match="shard-000001.tar: sha256 does not match"):
        for block in iter_blocks(tmp_path):
            got.append((block["shard"], block["block"]))
    # the swapped shard's last block is never handed out
    assert got == [("shard-000000.tar", 0), ("shard-000000.tar", 1), ("shard-000001.tar", 0)]
    # the datamodule's call (no digest passed) looks it up in the manifest beside the shard
    with pytest.raises(ShardError, match="sha256"):
        list(read_shard(str(second), 2048, 8, "float16"))
    assert len(list(read_shard(str(first), 2048, 8, "float16"))) == 2
    assert len(list(read_shard(str(second), 2048, 8, "float16", sha256=None))) == 2


def test_resume_checks_the_stored_shards(tmp_path):
    acts, token_ids, doc, pos = rows(5000)
    w = ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024)
    w.add(0, acts[:3000], token_ids[:3000], doc[:3000], pos[:3000])
    w.abort()
    (tmp_path / "shard-000001.tar").write_bytes((tmp_path / "shard-000000.tar").read_bytes())
    with pytest.raises(ShardError, match="shard-000001.tar: sha256"):
        ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024)


def test_abort_after_a_failed_close_keeps_the_real_error(tmp_path, monkeypatch):
    from sae_lab.data import shards

    orig, calls = shards._HashingFile.close, []

    def disk_full(self):  # fails once; closing again then hits the closed file (ValueError)
        calls.append(1)
        if len(calls) == 1:
            self.f.close()
            raise OSError(28, "No space left on device")
        return orig(self)

    w = ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024)
    monkeypatch.setattr(shards._HashingFile, "close", disk_full)
    acts, token_ids, doc, pos = rows(1024)
    with pytest.raises(OSError, match="No space left"):
        try:
            w.add(0, acts, token_ids, doc, pos)
        except BaseException:
            w.abort()
            raise
    assert not list(tmp_path.glob(".*tmp*"))


def test_two_writers_into_one_directory_are_refused(tmp_path):
    w = ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024)
    with pytest.raises(ShardError, match="another harvest"):
        ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024)
    w.add(0, *rows(1500))
    w.finish()  # releases the lock
    ShardSetWriter(tmp_path, HEADER, "float32", 1024, 1024).abort()


def test_training_reader_verifies_shards_without_being_told(tmp_path):
    """ShardDataModule calls read_shard(url, rows, d_in, dtype): the digest comes from the
    manifest, so a swapped shard stops training with an error naming it."""
    from sae_lab.data.datamodule import ShardDataModule
    from sae_lab.training.config import DataConfig

    write(tmp_path, 6144, shard_rows=2048)  # three shards; the last is held out
    (tmp_path / "shard-000001.tar").write_bytes((tmp_path / "shard-000000.tar").read_bytes())
    data = DataConfig(shards=str(tmp_path), val_shards=1, shuffle_buffer=0, num_workers=0)
    it = iter(ShardDataModule(data, 1024, seed=0, epochs=1).train_dataloader())
    with pytest.raises(ShardError, match="shard-000001.tar: sha256"):
        for _ in range(10):
            next(it)
