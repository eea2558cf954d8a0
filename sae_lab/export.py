"""Export an SAE in SAELens v6's on-disk layout, so `sae_lens.SAE.load_from_disk(DIR)` loads it.

    DIR/cfg.json                  architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
                                  normalize_activations="none", (k), metadata{model_name, ...}
    DIR/sae_weights.safetensors   exactly the tensors that architecture has in SAELens
    DIR/sparsity.safetensors      {"sparsity": log10(feature density + 1e-10)}, when known

How each sae_lab architecture maps onto SAELens v6 (sae_lens/saes/*.py):

    relu      -> standard   z = ReLU((x - b_dec) W_enc + b_enc); same maths (SAELens does not
                            require unit-norm decoder rows at inference).
    topk      -> topk       z = ReLU(TopK_k(pre)): SAELens keeps the k largest pre-activations and
                            ReLUs them, as we do; rescale_acts_by_decoder_norm=False.
    jumprelu  -> jumprelu   z = ReLU(pre) * 1[pre > ReLU(threshold)] (strict >, as ours);
                            threshold = exp(log_threshold) > 0, so ReLU(pre) = pre where it fires.
    batchtopk -> jumprelu   inference is z = ReLU(pre) * 1[pre > t] with one global t >= 0: a
                            JumpReLU whose threshold is t repeated for every latent.
    gated     -> gated      z = 1[(x - b_dec) W_enc + b_gate > 0] * ReLU((x - b_dec)(W_enc e^r_mag)
                            + b_mag); tensors W_enc, W_dec, b_dec, b_gate, r_mag, b_mag (no b_enc).

Every SAELens architecture subtracts b_dec from the input when apply_b_dec_to_input is true, as
every sae_lab architecture does. Input normalisation is already folded into saved sae_lab weights
(SAEModule folds its input scale before saving), hence normalize_activations="none".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from sae_lab.sae.base import SAE, replace_dir

SAELENS_ARCHITECTURE = {
    "relu": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "gated": "gated",
}
# The first SAELens release with this layout (metadata block, architecture-specific classes).
SAELENS_VERSION = "6.0.0"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
CONFIG_FILE = "cfg.json"

# sae_lab hook names -> TransformerLens hook names, which SAELens metadata uses.
_TL_HOOKS = {
    "resid_post": "hook_resid_post",
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "mlp_out": "hook_mlp_out",
    "attn_out": "hook_attn_out",
}


@torch.no_grad()
def saelens_tensors(sae: SAE) -> dict[str, Tensor]:
    """The SAELens state dict of `sae`: names and shapes of its SAELens architecture."""
    name = sae.cfg.architecture
    t = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}  # [d_in, d_sae] [d_sae, d_in]
    if name == "gated":
        t.update(b_gate=sae.b_gate, r_mag=sae.r_mag, b_mag=sae.b_mag)
    else:
        t["b_enc"] = sae.b_enc
    if name == "jumprelu":
        t["threshold"] = sae.threshold  # exp(log_threshold), [d_sae]
    elif name == "batchtopk":
        t["threshold"] = sae.threshold.expand(sae.d_sae)  # one global threshold per latent
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in t.items()}


def tl_hook_name(metadata: dict[str, Any]) -> str | None:
    """TransformerLens-style hook name (blocks.L.hook_resid_post) from sae_lab metadata."""
    layer, hook = metadata.get("layer"), metadata.get("hook")
    if layer is not None and hook in _TL_HOOKS:
        return f"blocks.{int(layer)}.{_TL_HOOKS[hook]}"
    return metadata.get("hook_name")


def saelens_config(
    sae: SAE,
    model_name: str | None = None,
    hook_name: str | None = None,
    context_size: int | None = None,
) -> dict[str, Any]:
    """cfg.json contents; names left None come from `sae.metadata`."""
    meta = sae.metadata
    cfg: dict[str, Any] = {
        "architecture": SAELENS_ARCHITECTURE[sae.cfg.architecture],
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": sae.cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if sae.cfg.architecture == "topk":
        cfg["k"] = sae.cfg.k
        cfg["rescale_acts_by_decoder_norm"] = False
    cfg["metadata"] = {
        "model_name": model_name or meta.get("model"),
        "hook_name": hook_name or tl_hook_name(meta),
        "hook_head_index": None,
        "context_size": context_size or meta.get("ctx_len"),
        "prepend_bos": meta.get("prepend_bos", False),
        "sae_lens_version": SAELENS_VERSION,
        "sae_lens_training_version": SAELENS_VERSION,
        # Where it came from, in sae_lab's own terms (SAELens keeps unknown metadata keys).
        "sae_lab_architecture": sae.cfg.architecture,
        "sae_lab_hook_name": meta.get("hook_name"),
        "sae_lab_layer": meta.get("layer"),
        "sae_lab_hook": meta.get("hook"),
    }
    return cfg


def log10_density(density: Tensor) -> Tensor:
    """SAELens's sparsity.safetensors convention: log10(fraction of tokens firing + 1e-10)."""
    return torch.log10(density.double() + 1e-10).float()


def export_saelens(
    sae: SAE,
    out: str | os.PathLike,
    density: Tensor | None = None,
    model_name: str | None = None,
    hook_name: str | None = None,
    context_size: int | None = None,
) -> Path:
    """Write `sae` to `out` in SAELens v6 layout, atomically (temporary dir, then rename)."""
    if density is not None and density.shape != (sae.d_sae,):
        raise ValueError(f"density has shape {tuple(density.shape)}; expected ({sae.d_sae},)")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(saelens_tensors(sae), tmp / WEIGHTS_FILE)
        if density is not None:
            save_file({"sparsity": log10_density(density.cpu())}, tmp / SPARSITY_FILE)
        cfg = saelens_config(sae, model_name, hook_name, context_size)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
