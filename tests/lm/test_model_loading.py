"""Loading models that do not fit: only the blocks a harvest needs, quantized weights, and the
record of how the model was loaded in the manifest and the SAE metadata."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import transformers as T

from sae_lab.data.harvest import HarvestConfig, harvest
from sae_lab.data.shards import read_manifest
from sae_lab.lm import hooks as L
from sae_lab.lm.load import WARN_4BIT, load_model

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB,
                               reason="bitsandbytes is not installed (sae-lab[quantize])")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 3-layer random Llama saved to disk (the architecture of the real targets)."""
    torch.manual_seed(0)
    cfg = T.LlamaConfig(num_hidden_layers=3, hidden_size=128, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=256, vocab_size=300)
    path = tmp_path_factory.mktemp("llama")
    T.LlamaModel(cfg).save_pretrained(path)
    return path


IDS = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))


def _acts(model, layer, stop_early=True):
    with torch.no_grad(), L.capture(model, [layer], "resid_post", stop_early) as acts:
        L.run_to_hooks(model, input_ids=IDS)
    return acts[layer]


def test_keep_layers_builds_only_the_first_blocks_and_matches_the_full_forward(tiny_llama):
    full = load_model(str(tiny_llama), lm_head=False)
    cut = load_model(str(tiny_llama), lm_head=False, keep_layers=2)
    assert L.n_layers(full) == 3 and L.n_layers(cut) == 2
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    with torch.no_grad():
        hidden = full(input_ids=IDS, output_hidden_states=True).hidden_states
    # Bit-identical to the whole model's forward pass, with or without stopping early.
    assert torch.equal(_acts(cut, 1), hidden[2])
    assert torch.equal(_acts(full, 1), hidden[2])
    with pytest.raises(ValueError, match="keep_layers=4: the model has 3 layers"):
        load_model(str(tiny_llama), keep_layers=4)


def test_harvest_loads_up_to_its_deepest_layer_and_records_how(tiny_lm, corpus, tmp_path):
    cfg = HarvestConfig(model=str(tiny_lm), dataset=str(corpus), out=str(tmp_path / "s"),
                        layers=(0,), ctx_len=32, batch_size=4, max_tokens=64, dtype="float32",
                        device="cpu", block_rows=1024, progress=False)
    out = harvest(cfg)[0]
    m = read_manifest(out)
    assert (m["n_layers"], m["layers_loaded"]) == (2, 1)
    assert (m["model_dtype"], m["quantize"], m["device_map"]) == ("float32", "none", "none")


def test_bad_quantize_or_device_map_is_a_one_line_error(tiny_llama):
    with pytest.raises(ValueError, match=r"quantize='3bit': choose one of \['none', '8bit'"):
        load_model(str(tiny_llama), quantize="3bit")
    with pytest.raises(ValueError, match=r"device_map='balanced': choose one of"):
        load_model(str(tiny_llama), device_map="balanced")


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def _cosine(acts, ref):
    return torch.nn.functional.cosine_similarity(acts.float().flatten(0, 1), ref.flatten(0, 1),
                                                 dim=-1)


@needs_bnb
def test_8bit_activations_are_close_to_full_precision(tiny_llama, capsys):
    """bitsandbytes >= 0.46 runs int8 on CPU; the issue asks for cosine >= 0.99 to float32.
    (Measured: 8bit 0.9998 here, 0.9988 on MiniLM layer 5.)"""
    ref = _acts(load_model(str(tiny_llama), lm_head=False), 1)
    q = load_model(str(tiny_llama), lm_head=False, quantize="8bit", keep_layers=2)
    assert "8bit" in type(q.layers[0].mlp.up_proj).__name__
    acts = _acts(q, 1)
    assert acts.dtype == torch.float32 and _cosine(acts, ref).min() >= 0.99
    assert _warnings(capsys) == []
    # `sae-lab plan`'s 8bit bytes against bitsandbytes' own count (measured: +0.8%; 4bit +4.9%).
    from sae_lab.plan import model_bytes, model_config

    planned = model_bytes(model_config(str(tiny_llama)), "float32", "8bit", keep_layers=2)
    assert abs(planned / q.get_memory_footprint() - 1) < 0.02


@needs_bnb
def test_4bit_loads_nf4_and_warns_in_one_line_that_it_misses_the_cosine_bar(tiny_llama, capsys):
    """No 4-bit setting reaches 0.99 (benchmarks/quantize_cosine.py: NF4 0.970 on MiniLM layer 5,
    fp4 0.940, compute dtype and double quant < 0.0002 apart), so 4bit loads the best one, NF4,
    and says so. Measured here: mean 0.986, min 0.982."""
    ref = _acts(load_model(str(tiny_llama), lm_head=False), 1)
    capsys.readouterr()
    q = load_model(str(tiny_llama), lm_head=False, quantize="4bit", keep_layers=2)
    assert _warnings(capsys) == [f"warning: {WARN_4BIT}"]
    up = q.layers[0].mlp.up_proj
    assert type(up).__name__ == "Linear4bit" and up.weight.quant_type == "nf4"
    assert up.compute_dtype == torch.float32 and up.weight.quant_state.nested is False
    acts = _acts(q, 1)
    assert acts.dtype == torch.float32
    # Below the bar, as the warning says; if a bitsandbytes release lifts it, revisit WARN_4BIT.
    assert 0.95 <= _cosine(acts, ref).mean() < 0.99


@needs_bnb
@pytest.mark.parametrize("quantize", ["8bit", "4bit"])
def test_quantized_activations_come_in_the_model_dtype(tiny_llama, quantize):
    q = load_model(str(tiny_llama), lm_head=False, dtype="float16", quantize=quantize,
                   keep_layers=2)
    assert _acts(q, 1).dtype == torch.float16


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_BNB and torch.cuda.is_available()), reason="needs CUDA")
def test_4bit_device_map_auto_on_gpu(tiny_llama):
    ref = _acts(load_model(str(tiny_llama), lm_head=False), 1)
    q = load_model(str(tiny_llama), lm_head=False, dtype="float16", quantize="4bit",
                   device_map="auto")
    with torch.no_grad(), L.capture(q, [1], "resid_post") as acts:
        L.run_to_hooks(q, input_ids=IDS.to(q.device))
    cos = torch.nn.functional.cosine_similarity(acts[1].float().cpu().flatten(0, 1),
                                                ref.flatten(0, 1), dim=-1)
    assert "4bit" in type(q.layers[0].mlp.up_proj).__name__ and cos.mean() >= 0.95
