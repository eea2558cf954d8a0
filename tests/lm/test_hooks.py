"""Hook points in every supported family, checked against the model's own hidden states."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from torch import nn

from sae_lab.lm import hooks as L

SMALL = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, intermediate_size=64,
             vocab_size=100)
DECODERS = {
    "gpt2": lambda: T.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=100,
                                 n_positions=32),
    "gpt_neox": lambda: T.GPTNeoXConfig(**SMALL),
    "llama": lambda: T.LlamaConfig(**SMALL, num_key_value_heads=2),
    "mistral": lambda: T.MistralConfig(**SMALL, num_key_value_heads=2),
    "qwen2": lambda: T.Qwen2Config(**SMALL, num_key_value_heads=2),
    "phi3": lambda: T.Phi3Config(**SMALL, num_key_value_heads=2, pad_token_id=0),
    "gemma": lambda: T.GemmaConfig(**SMALL, num_key_value_heads=2, head_dim=16),
    "gemma2": lambda: T.Gemma2Config(**SMALL, num_key_value_heads=2, head_dim=16),
}


def build(config, causal_lm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    cls = T.AutoModelForCausalLM if causal_lm else T.AutoModel
    return cls.from_config(config).eval()


def run(model, layer_ids, hook, ids):
    with torch.no_grad(), L.capture(model, layer_ids, hook, stop_early=False) as acts:
        out = model(input_ids=ids, output_hidden_states=True)
    return acts, out.hidden_states


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_decoder_hooks_add_up_to_the_residual_stream(family):
    """resid_post(l) = hidden_states[l+1] and resid_pre + attn_out + mlp_out = resid_post
    (the residual update of every pre-LN family here, NeoX's parallel form included)."""
    model = build(DECODERS[family]())
    assert L.family_name(model) == family and L.n_layers(model) == 3
    ids = torch.randint(0, 100, (2, 7))
    parts = {}
    for hook in L.HOOKS:
        acts, hidden = run(model, [0, 1], hook, ids)
        parts[hook] = acts
    for layer in (0, 1):
        resid = parts["resid_post"][layer]
        assert resid.shape == (2, 7, 32)
        torch.testing.assert_close(resid, hidden[layer + 1])
        torch.testing.assert_close(hidden[layer] + parts["attn_out"][layer]
                                   + parts["mlp_out"][layer], resid, rtol=1e-4, atol=1e-5)


def test_bert_hooks_are_the_post_ln_sublayer_outputs():
    model = build(T.BertConfig(**SMALL))
    assert L.family_name(model) == "bert"
    ids = torch.randint(0, 100, (2, 7))
    (resid, _), (attn, _), (mlp, hidden) = (
        run(model, [1], hook, ids) for hook in ("resid_post", "attn_out", "mlp_out"))
    block = model.encoder.layer[1]
    torch.testing.assert_close(resid[1], hidden[2])
    attention = block.attention.output.LayerNorm(attn[1] + hidden[1])  # post-LN residual
    torch.testing.assert_close(block.output.LayerNorm(mlp[1] + attention), hidden[2])


def test_causal_lm_wrappers_and_unembedding():
    lm = build(DECODERS["llama"](), causal_lm=True)
    base = build(DECODERS["llama"]())
    assert L.hook_module(lm, 2, "mlp_out") is lm.model.layers[2].mlp
    assert L.hook_module(base, 2, "attn_out") is base.layers[2].self_attn
    assert L.unembedding(lm).shape == (100, 32) and L.unembedding(base) is None
    assert L.hook_name(2, "mlp_out") == "blocks.2.hook_mlp_out"


def test_stop_early_skips_later_blocks():
    model = build(DECODERS["gpt2"]())
    calls = []
    handle = model.h[2].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad(), L.capture(model, [0, 1], "resid_post") as acts:
        L.run_to_hooks(model, input_ids=torch.randint(0, 100, (1, 5)))
    handle.remove()
    assert sorted(acts) == [0, 1] and calls == []


def test_generic_fallback_finds_opt_blocks_and_names_what_it_missed():
    model = build(T.OPTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                              ffn_dim=64, vocab_size=100, word_embed_proj_dim=32))
    assert L.family_name(model) == "generic"
    assert L.hook_module(model, 1) is model.decoder.layers[1]
    assert L.hook_module(model, 1, "attn_out") is model.decoder.layers[1].self_attn
    with pytest.raises(L.LayerError, match=r"mlp_out.*looked for sub-modules \['mlp', "
                                           r"'feed_forward'.*it has \[.*'fc1'"):
        L.hook_module(model, 1, "mlp_out")


def test_unknown_model_lists_the_names_it_tried():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.Sequential(nn.Linear(4, 4))

    with pytest.raises(L.LayerError, match=r"Odd.*looked for an nn.ModuleList at .*"
                                           r"'base_model.encoder.layer'.*'model.layers'"):
        L.hook_module(Odd(), 0)


def test_layer_out_of_range_lists_the_valid_range():
    model = build(DECODERS["qwen2"]())
    with pytest.raises(L.LayerError, match=r"layer 3 is out of range.*3 layers \(valid: 0\.\.2\)"):
        L.hook_module(model, 3)
    with pytest.raises(L.LayerError, match="unknown hook 'resid_pre'"):
        L.hook_module(model, 0, "resid_pre")
