"""Load the language model an SAE belongs to, and read tokens and logits off it.

    load_sae_dir(path)                      the SAE, with a one-line error for a wrong directory
    hook_point(sae, layer, hook)            (layer, hook) from arguments or the SAE's metadata
    check_shards(sae, manifest, source)     shards of the SAE's width; warnings if from elsewhere
    load_model, load_lm, resolve_device     re-exported from sae_lab.lm.load
    promoted_tokens(W_dec, W_U, k)          per latent, the k output tokens it raises most
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The device and model loaders live in sae_lab.lm.load; imported from here they still work.
from sae_lab.lm.load import (  # noqa: F401
    is_causal,
    load_lm,
    load_model,
    load_tokenizer,
    resolve_device,
)

if TYPE_CHECKING:  # torch is imported inside the functions: command --help stays fast
    from torch import Tensor, nn

    from sae_lab.sae.base import SAE


def load_sae_dir(path: str | os.PathLike, device: str = "cpu") -> SAE:
    """An sae_lab SAE directory (cfg.json + sae_weights.safetensors), in eval mode."""
    from sae_lab.sae.base import CONFIG_FILE, load

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


def unembedding_for(model: nn.Module, d_in: int, name: str) -> Tensor:
    """The [vocab, d_in] unembedding, or a one-line error naming the model."""
    from sae_lab.lm.hooks import unembedding

    W_U = unembedding(model) if is_causal(getattr(model, "config", None)) else None
    if W_U is None:
        raise ValueError(f"model {name} has no unembedding (not a causal LM), so latents have "
                         "no promoted tokens; use --top-logits 0")
    if W_U.shape[1] != d_in:
        raise ValueError(f"model {name}'s unembedding has width {W_U.shape[1]}, the SAE d_in="
                         f"{d_in}; promoted tokens need the residual width (use --top-logits 0)")
    return W_U


def promoted_tokens(W_dec: Tensor, W_U: Tensor, k: int, chunk: int = 512
                    ) -> tuple[Tensor, Tensor]:
    """(values, token ids), each [d_sae, k]: largest entries of W_dec @ W_U^T per latent.

    The direct path only (no final LayerNorm), as in the logit-lens views of feature browsers.
    """
    import torch

    W_U = W_U.detach().float()
    vals, idx = [], []
    for rows in W_dec.detach().float().split(chunk):
        v, i = (rows @ W_U.T).topk(min(k, W_U.shape[0]), dim=-1)  # [chunk, k]
        vals.append(v)
        idx.append(i)
    return torch.cat(vals), torch.cat(idx)
