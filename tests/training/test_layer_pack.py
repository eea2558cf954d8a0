"""Layers as a pack dimension: SAEs on several layers of one live model trained from one forward
pass per batch (stopped after the deepest layer), each exactly as if trained on its layer alone."""

import pytest
import torch
from helpers.tiny import CTX, deeper_lm

from sae_lab.data.live import LiveDataModule
from sae_lab.lm import hooks as L
from sae_lab.training.config import TrainConfig
from sae_lab.training.pack import stream_key, train_pack

LAYERS = (0, 1, 3)
SAES = {"topk": {"architecture": "topk", "k": 4, "expansion_factor": 2},
        "relu": {"architecture": "relu", "expansion_factor": 2}}


@pytest.fixture(scope="module")
def lm5(tiny_lm, tmp_path_factory):
    return deeper_lm(tiny_lm, tmp_path_factory.mktemp("lm5"), n_layer=5)


def member(lm, corpus, tmp_path, layer, arch):
    live = {"model": str(lm), "dataset": str(corpus), "layers": [layer], "ctx_len": CTX,
            "batch_size": 8, "val_tokens": 64, "device": "cpu"}
    return TrainConfig.from_dict({
        "data": {"live": live, "shuffle_buffer": 256}, "sae": SAES[arch], "batch_size": 64,
        "max_tokens": 64 * 4, "val_every_steps": 4, "val_batches": 1, "progress_bar": False,
        "save_checkpoints": False, "out_dir": str(tmp_path / f"{arch}_{layer}")})


class BlockCalls:
    """Counts the forward passes of each block of every model LiveDataModule loads."""

    def __init__(self, monkeypatch):
        self.calls: dict[int, int] = {}
        real = LiveDataModule.__init__

        def init(dm, *a, **k):
            real(dm, *a, **k)
            for i, block in enumerate(L.blocks(dm.source.model)):
                block.register_forward_pre_hook(lambda *_, i=i: self._count(i))

        monkeypatch.setattr(LiveDataModule, "__init__", init)

    def _count(self, i):
        self.calls[i] = self.calls.get(i, 0) + 1


def test_pack_of_3_layers_x_2_saes_equals_each_single_layer_run(lm5, corpus, tmp_path,
                                                                 monkeypatch):
    cfgs = [member(lm5, corpus, tmp_path, layer, arch) for layer in LAYERS for arch in SAES]
    names = [f"{arch}_{layer}" for layer in LAYERS for arch in SAES]
    assert len({stream_key(c) for c in cfgs}) == 1  # one stream: the layer is not part of it
    calls = BlockCalls(monkeypatch)
    packed = train_pack(cfgs, names, tmp_path / "pack", logger=False, save_checkpoints=False)
    pack_calls, calls.calls = dict(calls.calls), {}
    # The single-layer runs: one pack of the two SAEs per layer (a pack member equals its run
    # alone: tests/training/test_pack.py).
    alone = []
    for j, layer in enumerate(LAYERS):
        alone += train_pack(cfgs[2 * j: 2 * j + 2], names[2 * j: 2 * j + 2],
                            tmp_path / f"layer{layer}", logger=False, save_checkpoints=False)
        if layer == 0:
            layer0_calls = dict(calls.calls)
    for a, p in zip(alone, packed, strict=True):
        assert p.sae.metadata["layer"] == a.sae.metadata["layer"]
        for k, v in a.sae.state_dict().items():
            torch.testing.assert_close(p.sae.state_dict()[k], v, rtol=0, atol=1e-5)
        assert p.metrics["fvu"] == pytest.approx(a.metrics["fvu"], abs=1e-5)
    assert [p.sae.metadata["layer"] for p in packed] == [0, 0, 1, 1, 3, 3]
    assert packed[0].metrics["fvu"] < 1
    # One forward pass per batch for all three layers (as many as layer 0 alone takes), stopped
    # after the deepest: block 4 never runs.
    assert pack_calls[0] == layer0_calls[0] and pack_calls[3] == pack_calls[0]
    assert 4 not in pack_calls and 1 not in layer0_calls
    assert not torch.equal(packed[0].sae.W_enc, packed[2].sae.W_enc)  # layers differ
