"""`sae-lab compare SWEEP hf://...`: one table and one plot, every SAE on the same rows."""

from __future__ import annotations

import pytest
from helpers.hub import fake_sweep, hub_cache, offline_hub, sparsify_folder
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.evaluate import evaluate_sae, shard_activations

D_IN = 64  # the tiny model's width


@pytest.mark.slow
def test_compare_sweep_and_hub(tiny_shards, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "hf"
    cache.mkdir()
    offline_hub(monkeypatch, cache, tmp_path / "sae_lab_cache")
    saes = {"topk": make_sae(D_IN, 128, "topk"), "frontier_0": make_sae(D_IN, 128, "relu", 1)}
    sweep = fake_sweep(tmp_path / "sweep", saes)
    peer = make_sae(D_IN, 256, "topk", seed=2)
    sparsify_folder(peer, tmp_path / "peer" / "layers.1")
    hub_cache(cache, "peer/saes", tmp_path / "peer")
    plot = tmp_path / "cmp.png"
    main(["compare", str(sweep), "hf://peer/saes/layers.1", "--shards", str(tiny_shards),
          "--max-tokens", "500", "--plot", str(plot)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["sae", "architecture", "d_sae"]
    body = lines[1:-1]
    assert len(body) == 3 and lines[-1] == f"plot: {plot}"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    tokens = {ln.split()[7] for ln in body}
    assert tokens == {"500"}  # the same rows for all
    want = evaluate_sae(peer, shard_activations(tiny_shards, max_tokens=500)).metrics["fvu"]
    row = next(ln for ln in body if ln.startswith("hf://peer/saes/layers.1"))
    assert float(row.split()[4]) == pytest.approx(want, rel=1e-3)
