"""Export an SAE in SAELens v6's on-disk layout, so `sae_lens.SAE.load_from_disk(DIR)` loads it.

    DIR/cfg.json                  architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
                                  normalize_activations, (k), metadata{model_name, ...}
    DIR/sae_weights.safetensors   exactly the tensors that architecture has in SAELens
    DIR/sparsity.safetensors      {"sparsity": log10(feature density + 1e-10)}, when known

Each architecture says what it maps to (`SAE.saelens_architecture`, `saelens_cfg`,
`saelens_tensors`); for the shipped ones (SAELens v6, sae_lens/saes/*.py):

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
every sae_lab architecture does. The dataset-wide input scale is already folded into saved sae_lab
weights (SAEModule folds it before saving), hence normalize_activations="none"; an SAE with
token_norm (each token scaled to norm sqrt(d_in) on the way in, back on the way out) exports as
"constant_norm_rescale", SAELens's name for exactly that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from sae_lab.evaluate import DENSITY_FILE, evaluate_sae, shard_activations
from sae_lab.files import MARKER, OutputDirError, atomic_dir, check_output_dir, check_outside
from sae_lab.lm.attach import load_sae_dir
from sae_lab.lm.hooks import hook_name
from sae_lab.lm.load import canonical_name
from sae_lab.sae.base import SAE

# The first SAELens release with this layout (metadata block, architecture-specific classes).
SAELENS_VERSION = "6.0.0"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
CONFIG_FILE = "cfg.json"
EXPORT_FILES = (CONFIG_FILE, WEIGHTS_FILE, SPARSITY_FILE)  # an earlier export, before markers


@torch.no_grad()
def saelens_tensors(sae: SAE) -> dict[str, Tensor]:
    """The SAELens state dict of `sae`: names and shapes of its SAELens architecture."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in sae.saelens_tensors().items()}


def tl_hook_name(metadata: dict[str, Any]) -> str | None:
    """TransformerLens-style hook name (blocks.L.hook_resid_post), as SAELens metadata uses."""
    if metadata.get("hook_name"):
        return metadata["hook_name"]
    if metadata.get("layer") is not None and metadata.get("hook"):
        return hook_name(int(metadata["layer"]), metadata["hook"])
    return None


def saelens_config(
    sae: SAE,
    model_name: str | None = None,
    hook_name: str | None = None,
    context_size: int | None = None,
) -> dict[str, Any]:
    """cfg.json contents; names left None come from `sae.metadata`."""
    meta = sae.metadata
    cfg: dict[str, Any] = {
        "architecture": sae.saelens_architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": sae.cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "constant_norm_rescale" if sae.cfg.token_norm else "none",
        "reshape_activations": "none",
    }
    cfg.update(sae.saelens_cfg())
    cfg["metadata"] = {
        "model_name": canonical_name(str(model_name or meta.get("model") or "")) or None,
        "hook_name": hook_name or tl_hook_name(meta),
        "hook_head_index": None,
        "context_size": context_size or meta.get("ctx_len"),
        "prepend_bos": meta.get("prepend_bos", False),
        "sae_lens_version": SAELENS_VERSION,
        "sae_lens_training_version": SAELENS_VERSION,
        # Where it came from, in sae_lab's terms (SAELens keeps unknown metadata keys).
        "sae_lab_architecture": sae.name,
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
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """Write `sae` to `out` in SAELens v6 layout, atomically (temporary dir, then rename).

    An existing `out` is replaced only when it is an earlier export; anything else is refused,
    as is an `out` that is, or is inside, one of `inputs` or the directory `sae` was loaded
    from (nothing is written then).
    """
    if density is not None and density.shape != (sae.d_sae,):
        raise ValueError(f"density has shape {tuple(density.shape)}; expected ({sae.d_sae},)")
    check_export_out(out, sae.source, *inputs)
    with atomic_dir(out, "export", known=EXPORT_FILES) as tmp:
        save_file(saelens_tensors(sae), tmp / WEIGHTS_FILE)
        if density is not None:
            save_file({"sparsity": log10_density(density.cpu())}, tmp / SPARSITY_FILE)
        cfg = saelens_config(sae, model_name, hook_name, context_size)
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    return Path(out)


def check_export_out(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> None:
    """Refuse, before anything is read or written, an `out` that is or lies inside one of
    `inputs` (the SAE directory, --density, --shards), that holds an sae_lab SAE (its cfg.json
    would become the SAELens one), or that is not an earlier export."""
    check_outside(out, inputs)
    cfg = Path(out) / CONFIG_FILE
    if cfg.is_file() and not (Path(out) / MARKER).exists() and _is_sae_lab_cfg(cfg):
        raise OutputDirError(f"{out}: holds an sae_lab SAE; exporting there would replace it. "
                             "Choose a new or empty directory")
    check_output_dir(out, "export", EXPORT_FILES)


def _is_sae_lab_cfg(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
        return isinstance(data, dict) and "sae" in data
    except (OSError, ValueError):
        return False


# --- an SAE directory, end to end (`sae-lab export`) -------------------------------------------


def export_dir(sae_dir: str | os.PathLike, out: str | os.PathLike,
               density: str | os.PathLike | None = None, shards: str | None = None,
               max_tokens: int | None = None, model_name: str | None = None,
               hook_name: str | None = None, context_size: int | None = None
               ) -> tuple[Path, SAE, str | None]:
    """Export the SAE in `sae_dir` to `out` (SAELens v6); returns (out, the SAE, where its
    feature density came from: `density`, else SAE_DIR/eval, else measured on `shards`; None
    when none of them is there)."""
    from safetensors.torch import load_file

    check_export_out(out, sae_dir, density, shards)  # before loading or measuring anything
    sae = load_sae_dir(sae_dir)
    found, source = None, None
    default = Path(sae_dir) / "eval" / DENSITY_FILE
    if density or (default.is_file() and not shards):
        path = Path(density or default)
        if not path.is_file():
            raise FileNotFoundError(f"--density {path}: no such file")
        found, source = load_file(path)["density"], str(path)
    elif shards:
        found = evaluate_sae(sae, shard_activations(shards, max_tokens=max_tokens)).density
        source = str(shards)
    path = export_saelens(sae, out, found, model_name, hook_name, context_size)
    return path, sae, source
