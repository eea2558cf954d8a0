from __future__ import annotations

import pytest

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm_shards(corpus, tmp_path_factory):
    """MiniLM layer-3 activations of the corpus: 600 tokens in one shard, with token ids."""
    from sae_lab.data.harvest import HarvestConfig, harvest

    out = tmp_path_factory.mktemp("minilm-acts")
    cfg = HarvestConfig(model=MINILM, dataset=str(corpus), out=str(out), layers=(3,),
                        hook="resid_post", ctx_len=64, batch_size=8, max_tokens=600,
                        dtype="float32", device="cpu", shard_rows=2048, block_rows=1024,
                        progress=False)
    return harvest(cfg)[3]
