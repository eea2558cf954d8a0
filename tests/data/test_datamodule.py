"""Streaming reader: exactly-once epochs with several workers, whole batches, URLs, errors."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from sae_lab.data.datamodule import ShardDataModule, shuffle_batches
from sae_lab.data.shards import ShardError, ShardSetWriter
from sae_lab.training.config import DataConfig

D = 4
HEADER = {"model": "m", "layer": 0, "hook": "resid_post"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """6 shards of 1500 rows (the last one 1000); row i is (i, i+0.25, i+0.5, i+0.75)."""
    directory = tmp_path_factory.mktemp("shards")
    n = 8500
    acts = torch.arange(n, dtype=torch.float32)[:, None] + torch.arange(D) / 4
    w = ShardSetWriter(directory, HEADER, "float32", 1500, 1024)
    w.add(0, acts, torch.zeros(n, dtype=torch.int32), torch.zeros(n, dtype=torch.long),
          torch.arange(n, dtype=torch.int32))
    w.finish()
    return directory


def ids(batches) -> list[int]:
    out = []
    for b in batches:
        assert b.dtype == torch.float32 and b.shape[1] == D
        assert torch.equal(b - b[:, :1], (torch.arange(D) / 4).expand_as(b))  # rows intact
        out += b[:, 0].long().tolist()
    return out


def test_one_epoch_with_two_workers_yields_every_row_once(shard_dir):
    data = DataConfig(shards=str(shard_dir), val_shards=1, shuffle_buffer=3000, num_workers=2)
    dm = ShardDataModule(data, batch_size=512, seed=1, epochs=1)
    assert dm.d_in == D and dm.manifest["tokens"] == 8500
    batches = list(dm.train_dataloader())
    got = ids(batches)
    assert Counter(got) == Counter(range(7500))  # the last shard (rows 7500..) is validation
    assert sum(len(b) != 512 for b in batches) <= 2  # at most one partial batch per worker
    assert got != sorted(got)  # shuffled across blocks...
    first = batches[0][:, 0]
    assert first.max() - first.min() > 1024  # ...and the first batch mixes several blocks


def test_two_nodes_with_two_workers_each_read_disjoint_halves(shard_dir, monkeypatch):
    """Nodes from the trainer (rank, world size) or, outside Lightning, from RANK/WORLD_SIZE."""
    data = DataConfig(shards=str(shard_dir), val_shards=1, shuffle_buffer=2048, num_workers=2)
    for source in ("trainer", "environment"):
        seen = []
        for rank in (0, 1):
            dm = ShardDataModule(data, batch_size=256, seed=5, epochs=1)
            if source == "trainer":
                dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
            else:
                monkeypatch.setenv("RANK", str(rank))
                monkeypatch.setenv("WORLD_SIZE", "2")
            seen.append(ids(dm.train_dataloader()))
        assert not set(seen[0]) & set(seen[1]) and len(seen[0]) >= 3000
        assert Counter(seen[0] + seen[1]) == Counter(range(7500))


def test_endless_stream_gives_whole_batches_and_exact_epochs(shard_dir):
    data = DataConfig(shards=str(shard_dir), val_shards=1, shuffle_buffer=0)
    dm = ShardDataModule(data, batch_size=1000, seed=0)  # epochs=None: endless
    it = iter(dm.train_dataloader())
    batches = [next(it) for _ in range(16)]  # 16000 rows: two epochs of 7500 and a bit
    assert all(len(b) == 1000 for b in batches)  # the epoch remainder is carried, not dropped
    got = ids(batches)
    assert sorted(got[:7500]) == list(range(7500)) and sorted(got[7500:15000]) == list(range(7500))
    assert got[:7500] != got[7500:15000]  # each epoch has its own shard order


def test_validation_is_deterministic_and_held_out(shard_dir):
    data = DataConfig(shards=str(shard_dir), val_shards=2, shuffle_buffer=4096, num_workers=0)
    dm = ShardDataModule(data, batch_size=600, seed=3)
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert ids(first) == list(range(6000, 8500))  # the last two shards, in order
    assert [len(b) for b in first] == [600] * 4 + [100]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_shuffle_buffer_keeps_every_row_and_mixes():
    blocks = [torch.arange(i, i + 1024.0)[:, None] for i in range(0, 10240, 1024)]
    gen = torch.Generator().manual_seed(0)
    out = list(shuffle_batches(iter(blocks), 300, 4096, gen))
    got = torch.cat(out)[:, 0].long()
    assert sorted(got.tolist()) == list(range(10240)) and len(out[-1]) == 10240 % 300
    assert got[:300].max() - got[:300].min() > 2048  # the first batch spans several blocks
    assert len(list(shuffle_batches(iter(blocks), 300, 4096, gen, partial_last=False))) == 34


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_reads_file_and_http_urls(shard_dir, tmp_path):
    local = ids(ShardDataModule(DataConfig(shards=str(shard_dir)), 700).val_dataloader())
    data = DataConfig(shards=shard_dir.as_uri())
    assert ids(ShardDataModule(data, 700).val_dataloader()) == local
    if shutil.which("curl") is None:
        pytest.skip("webdataset reads http through curl, which is not installed")
    handler = functools.partial(QuietHandler, directory=str(shard_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        dm = ShardDataModule(DataConfig(shards=url, num_workers=1), 700, epochs=1)
        assert ids(dm.val_dataloader()) == local
        assert Counter(ids(dm.train_dataloader())) == Counter(range(7500))
        broken = ShardDataModule(DataConfig(shards=url + "/"), 700, epochs=1)
        broken.train_shards = [{"name": "shard-000099.tar", "rows": 10}]
        with pytest.raises(ShardError, match="shard-000099.tar"):
            list(broken.train_dataloader())
    finally:
        server.shutdown()


def test_truncated_shard_stops_training_with_its_name(shard_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    shard = copy / "shard-000002.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    for workers in (0, 2):
        dm = ShardDataModule(DataConfig(shards=str(copy), num_workers=workers), 500, epochs=1)
        with pytest.raises(Exception, match="shard-000002.tar"):
            list(dm.train_dataloader())


def test_too_few_shards_are_reported(shard_dir):
    with pytest.raises(ShardError, match="val_shards=6 leaves no training shards"):
        ShardDataModule(DataConfig(shards=str(shard_dir), val_shards=6), 100)
    with pytest.raises(ShardError, match="num_workers=8"):
        ShardDataModule(DataConfig(shards=str(shard_dir), num_workers=8), 100)


def test_sae_width_that_disagrees_with_the_manifest_names_both(shard_dir):
    from sae_lab.sae import sae_config
    from sae_lab.sae.config import ConfigError
    from sae_lab.training.config import TrainConfig
    from sae_lab.training.run import build_module

    data = DataConfig(shards=str(shard_dir))
    cfg = TrainConfig(sae=sae_config(d_in=512), data=data, batch_size=256, max_tokens=1024)
    with pytest.raises(ConfigError, match=r"sae.d_in=512 .*d_in=4"):
        build_module(cfg, ShardDataModule(data, 256))


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_restarted_at_a_position_continues_it_exactly(shard_dir, workers):
    """What --resume relies on: the stream from position P (the shuffle pool as it was, each
    worker in its turn) is the uninterrupted stream minus its first P batches."""
    from itertools import islice

    data = DataConfig(shards=str(shard_dir), shuffle_buffer=1000, num_workers=workers)
    full = [b[:, 0].tolist() for b in islice(ShardDataModule(data, 300, seed=3)
                                             .train_dataloader(), 40)]
    for position in (7, 31):  # 31: past the end of the first epoch (25 batches)
        dm = ShardDataModule(data, 300, seed=3)
        dm.load_state_dict(dm.state_dict() | {"train_batches": position})
        rest = [b[:, 0].tolist() for b in islice(dm.train_dataloader(), 40 - position)]
        assert rest == full[position:], position


def test_array_stream_restarted_at_a_position_continues_it_exactly():
    from itertools import islice

    from sae_lab.data.arrays import ArrayDataModule

    rows = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, D)
    dm = ArrayDataModule(rows[:900], rows[900:], 128, seed=2)
    full = [b[:, 0].tolist() for b in islice(dm.train_dataloader(), 20)]
    assert sorted(sum(full[:7], [])) != sum(full[:7], [])  # shuffled
    assert len(set(sum(full[:7], []))) == 7 * 128  # each row at most once a pass
    dm.load_state_dict({"train_batches": 9})  # 7 batches a pass: inside the second
    assert [b[:, 0].tolist() for b in islice(dm.train_dataloader(), 11)] == full[9:]
