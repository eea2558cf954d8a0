"""Load the language model an SAE belongs to, and read tokens and logits off it.

    resolve_device("auto")                  cuda when there is one, else cpu
    load_sae_dir(path)                      the SAE, with a one-line error for a wrong directory
    hook_point(sae, layer, hook)            (layer, hook) from arguments or the SAE's metadata
    check_shards(sae, manifest, source)     shards of the SAE's width; warnings if from elsewhere
    load_model(name), load_lm(name)         the model (with its LM head when it has one), tokenizer
    promoted_tokens(W_dec, W_U, k)          per latent, the k output tokens it raises most
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sae_lab.data.layers import unembedding
from sae_lab.models import resolve_model
from sae_lab.sae.base import CONFIG_FILE, SAE, load

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def resolve_device(name: str = "auto") -> str:
    """"auto" -> cuda when available, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return name


def load_sae_dir(path: str | os.PathLike, device: str = "cpu") -> SAE:
    """An sae_lab SAE directory (cfg.json + sae_weights.safetensors), in eval mode."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such SAE directory")
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (not an sae_lab SAE directory)")
    return load(path, device).eval()


def hook_point(sae: SAE, layer: int | None = None, hook: str | None = None) -> tuple[int, str]:
    """(layer, hook): the given values, else those recorded in the SAE's metadata."""
    layer = sae.metadata.get("layer") if layer is None else layer
    hook = hook or sae.metadata.get("hook") or "resid_post"
    if layer is None:
        raise ValueError("the SAE's metadata names no layer; pass --layer")
    return int(layer), hook


def check_shards(sae: SAE, manifest: dict[str, Any], source: str) -> list[str]:
    """Error when the shards' width is not the SAE's; warnings when they come from elsewhere."""
    if manifest.get("d_in") != sae.d_in:
        raise ValueError(f"shards {source} have d_in={manifest.get('d_in')}; the SAE has "
                         f"d_in={sae.d_in}")
    warnings = []
    for key in ("model", "layer", "hook"):
        ours, theirs = sae.metadata.get(key), manifest.get(key)
        if ours is not None and theirs is not None and ours != theirs:
            warnings.append(f"the SAE was trained on {key}={ours!r}, shards {source} have "
                            f"{key}={theirs!r}")
    return warnings


def model_name(sae: SAE, model: str | None) -> str:
    name = model or sae.metadata.get("model")
    if not name:
        raise ValueError("the SAE's metadata names no model; pass --model")
    return name


def is_causal(config: Any) -> bool:
    """A model whose checkpoint has a next-token head (GPT2LMHeadModel, LlamaForCausalLM, ...)."""
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)


def load_tokenizer(name: str, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(name), revision=revision)


def load_model(name: str, device: str = "cpu", revision: str | None = None,
               dtype: torch.dtype = torch.float32) -> nn.Module:
    """A Hub id or local directory, in eval mode; with its LM head when the checkpoint has one
    (AutoModelForCausalLM), else the bare model (AutoModel). Never runs remote code."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    name = resolve_model(name)
    config = AutoConfig.from_pretrained(name, revision=revision)
    cls = AutoModelForCausalLM if is_causal(config) else AutoModel
    return cls.from_pretrained(name, revision=revision, dtype=dtype).to(device).eval()


def load_lm(name: str, device: str = "cpu", revision: str | None = None) -> tuple[nn.Module, Any]:
    """(model, tokenizer) of a Hub id or local directory."""
    return load_model(name, device, revision), load_tokenizer(name, revision)


def unembedding_for(model: nn.Module, d_in: int, name: str) -> Tensor:
    """The [vocab, d_in] unembedding, or a one-line error naming the model."""
    W_U = unembedding(model) if is_causal(getattr(model, "config", None)) else None
    if W_U is None:
        raise ValueError(f"model {name} has no unembedding (not a causal LM), so latents have "
                         "no promoted tokens; use --top-logits 0")
    if W_U.shape[1] != d_in:
        raise ValueError(f"model {name}'s unembedding has width {W_U.shape[1]}, the SAE d_in="
                         f"{d_in}; promoted tokens need the residual width (use --top-logits 0)")
    return W_U


@torch.no_grad()
def promoted_tokens(W_dec: Tensor, W_U: Tensor, k: int, chunk: int = 512
                    ) -> tuple[Tensor, Tensor]:
    """(values, token ids), each [d_sae, k]: largest entries of W_dec @ W_U^T per latent.

    The direct path only (no final LayerNorm), as in the logit-lens views of feature browsers.
    """
    W_U = W_U.detach().float()
    vals, idx = [], []
    for rows in W_dec.detach().float().split(chunk):
        v, i = (rows @ W_U.T).topk(min(k, W_U.shape[0]), dim=-1)  # [chunk, k]
        vals.append(v)
        idx.append(i)
    return torch.cat(vals), torch.cat(idx)


def add_hook_args(p: argparse.ArgumentParser) -> None:
    """--layer, --hook and --device, shared by the commands that run the model at the SAE's hook."""
    p.add_argument("--layer", type=int, help="hook layer (default: the SAE's)")
    p.add_argument("--hook", help="hook: resid_post, mlp_out or attn_out (default: the SAE's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
