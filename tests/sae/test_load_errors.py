"""A damaged SAE folder or shard is one line naming the file, from the library and the CLI."""

from __future__ import annotations

import json
import struct
import tarfile

import pytest
import torch
from helpers.tiny import make_sae

import sae_lab
from sae_lab.cli import main
from sae_lab.data.shards import ShardSetWriter, iter_blocks

HEADER = {"model": "m", "revision": None, "tokenizer": "t", "dataset": {"path": "d"},
          "layer": 0, "hook": "resid_post", "ctx_len": 16, "model_dtype": "float32",
          "special_tokens": "excluded"}


def saved(tmp_path, d_in: int = 8):
    sae = make_sae(d_in=d_in, d_sae=2 * d_in, arch="relu")
    sae.metadata.update(model="m", layer=0, hook="resid_post")
    return sae.save(tmp_path / "sae")


def shards(tmp_path, d_in: int = 8):
    n = 2048
    w = ShardSetWriter(tmp_path / "acts", HEADER, "float32", 2048, 1024)
    w.add(0, torch.randn(n, d_in), torch.zeros(n, dtype=torch.int32), torch.arange(n) // 16,
          (torch.arange(n) % 16).to(torch.int32))
    w.finish()
    return tmp_path / "acts"


def cli_error(argv, capsys) -> str:
    """The CLI's one stderr line (exit code 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"sae-lab {argv[0]}: error: ")
    return lines[0]


def test_cfg_width_other_than_the_weights_names_file_and_both_shapes(tmp_path, capsys):
    sae_dir = saved(tmp_path, d_in=256)
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    cfg["sae"]["d_in"] = 384
    (sae_dir / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        sae_lab.load(sae_dir)
    msg = str(e.value)
    assert "\n" not in msg and str(sae_dir / "sae_weights.safetensors") in msg
    assert str(sae_dir / "cfg.json") in msg and "256" in msg and "384" in msg, msg
    assert "d_in 384" in cli_error(["eval", str(sae_dir), "--shards", str(tmp_path)], capsys)


def test_safetensors_header_of_2_to_the_62_is_not_a_safetensors_file(tmp_path, capsys):
    sae_dir = saved(tmp_path)
    weights = sae_dir / "sae_weights.safetensors"
    weights.write_bytes(struct.pack("<Q", 2**62) + weights.read_bytes()[8:])
    with pytest.raises(ValueError, match="not a safetensors file / corrupt header") as e:
        sae_lab.load(sae_dir)
    assert "\n" not in str(e.value) and str(weights) in str(e.value)
    msg = cli_error(["eval", str(sae_dir), "--shards", str(tmp_path)], capsys)
    assert str(weights) in msg and "corrupt header" in msg


def test_truncated_shard_names_its_path_not_a_stream_object(tmp_path, capsys):
    acts = shards(tmp_path)
    shard = acts / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        first = tar.getmembers()[0]
    shard.write_bytes(shard.read_bytes()[: first.offset_data + first.size // 2])
    with pytest.raises(ValueError) as e:
        list(iter_blocks(acts))
    assert "object at 0x" not in str(e.value) and str(shard) in str(e.value)
    msg = cli_error(["eval", str(saved(tmp_path)), "--shards", str(acts), "--device", "cpu"],
                    capsys)
    assert "object at 0x" not in msg and str(shard) in msg, msg
