"""Other libraries' SAE folders -> sae_lab SAEs with the same outputs.

    sae_lab    cfg.json {"sae": {...}, "metadata": {...}} + sae_weights.safetensors  (as is)
    saelens    cfg.json {"architecture", "d_in", "d_sae", ...} + sae_weights.safetensors: SAELens
               v6 (a `metadata` block) and the older flat cfg.json of its pretrained releases;
               sae_lab's own uploads are in this layout (`sae-lab push`)
    sparsify   cfg.json {"k", "num_latents", "d_in", ...} + sae.safetensors holding
               encoder.weight [d_sae, d_in], encoder.bias, W_dec [d_sae, d_in], b_dec

SAELens's architectures map to ours: standard -> relu, topk -> topk, jumprelu -> jumprelu,
gated -> gated; normalize_activations "none" or "constant_norm_rescale" (our token_norm). An
SAE that does not subtract b_dec from its input (apply_b_dec_to_input false) has b_dec @ W_enc
folded into its encoder bias, so that (x - b_dec) W_enc + b_enc' = x W_enc + b_enc. sparsify's
TopK (ReLU, then the k largest) is ours (the k largest, then ReLU): the same latents and values.

A folder holding several SAEs in subfolders (a SAELens pretrained release, a sparsify run, a
sweep pushed by sae_lab) is a release: one SAE of it is named by its path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sae_lab.sae import ARCHITECTURES, sae_config
from sae_lab.sae.base import SAE, TRAINING_BUFFERS, read_weights

CONFIG_FILE = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SAELENS_ARCHITECTURES = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu",
                         "gated": "gated"}
LAYOUTS = ("sae_lab", "saelens", "sparsify")
# SAELens hook names (TransformerLens) -> (layer offset, sae_lab hook)
_TL_HOOKS = {"hook_resid_post": (0, "resid_post"), "hook_resid_pre": (-1, "resid_post"),
             "hook_mlp_out": (0, "mlp_out"), "hook_attn_out": (0, "attn_out")}
# sparsify hookpoints (module names of a Hugging Face model) -> sae_lab hook
_SPARSIFY_HOOKS = {"": "resid_post", ".mlp": "mlp_out", ".self_attn": "attn_out",
                   ".attn": "attn_out"}


def read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: not a JSON object")
    return cfg


def layout_of(directory: Path) -> str | None:
    """"sae_lab", "saelens" or "sparsify" for a folder holding one SAE; None otherwise."""
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        return None
    if (directory / SPARSIFY_WEIGHTS).is_file():
        return "sparsify"
    if not (directory / SAELENS_WEIGHTS).is_file():
        return None
    cfg = read_config(cfg_path)
    if isinstance(cfg.get("sae"), dict):
        return "sae_lab"
    return "saelens" if "d_in" in cfg else None


def sae_folders(root: Path, depth: int = 4) -> list[Path]:
    """The folders under `root` (itself included) that hold one SAE, in name order."""
    if layout_of(root):
        return [root]
    if depth == 0 or not root.is_dir():
        return []
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += sae_folders(child, depth - 1)
    return found


def pick_sae_folder(root: Path, name: str) -> Path:
    """The one SAE folder in `root`; an error naming the choices when there are several or a
    one-line error naming the layouts when there is none."""
    found = sae_folders(root)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"{name}: unknown SAE layout (expected cfg.json with "
                         f"{SAELENS_WEIGHTS} (sae_lab, SAELens) or {SPARSIFY_WEIGHTS} (sparsify))")
    paths = [p.relative_to(root).as_posix() for p in found]
    shown = ", ".join(paths[:8]) + (f", ... ({len(paths)} in all)" if len(paths) > 8 else "")
    raise ValueError(f"{name} holds {len(paths)} SAEs ({shown}); name one as {name}/PATH")


def load_folder(directory: Path) -> SAE:
    """The SAE in `directory`, in any known layout, as an sae_lab SAE in eval mode (float32 for
    foreign layouts)."""
    from sae_lab.sae.base import load

    layout = layout_of(directory)
    if layout == "sae_lab":
        return load(directory).eval()
    if layout == "saelens":
        return from_saelens(directory)
    if layout == "sparsify":
        return from_sparsify(directory)
    raise ValueError(f"{directory}: unknown SAE layout (expected cfg.json with {SAELENS_WEIGHTS} "
                     f"(sae_lab, SAELens) or {SPARSIFY_WEIGHTS} (sparsify))")


# --- SAELens ---------------------------------------------------------------------------------


def from_saelens(directory: Path) -> SAE:
    cfg_path = directory / CONFIG_FILE
    cfg = read_config(cfg_path)
    meta = {**cfg, **(cfg.get("metadata") or {})}  # v6 keeps them in metadata; older: flat
    arch, extra = _saelens_architecture(cfg, cfg_path)
    norm = cfg.get("normalize_activations") or "none"
    if norm not in ("none", "constant_norm_rescale"):
        raise ValueError(f"{cfg_path}: normalize_activations={norm!r} needs a dataset scale this "
                         "converter does not have (supported: none, constant_norm_rescale)")
    t = _float32(read_weights(directory / SAELENS_WEIGHTS))
    _need(t, ("W_enc", "W_dec", "b_dec"), directory / SAELENS_WEIGHTS)
    d_in, d_sae = t["W_enc"].shape
    shift = torch.zeros(d_sae) if cfg.get("apply_b_dec_to_input", True) else t["b_dec"] @ t["W_enc"]
    state = {"W_enc": t["W_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if arch == "gated":
        _need(t, ("b_gate", "r_mag", "b_mag"), directory / SAELENS_WEIGHTS)
        state.update(b_gate=t["b_gate"] + shift, r_mag=t["r_mag"],
                     b_mag=t["b_mag"] + shift * t["r_mag"].exp())
    else:
        _need(t, ("b_enc",), directory / SAELENS_WEIGHTS)
        state["b_enc"] = t["b_enc"] + shift
    if arch == "jumprelu":
        _need(t, ("threshold",), directory / SAELENS_WEIGHTS)
        # ReLU(pre) * 1[pre > ReLU(t)]: a threshold <= 0 fires on every pre > 0
        tiny = torch.finfo(torch.float32).tiny
        state["log_threshold"] = t["threshold"].clamp_min(tiny).log()
    sae = ARCHITECTURES[arch](
        sae_config(arch, d_in=d_in, d_sae=d_sae, token_norm=norm == "constant_norm_rescale",
                   **extra),
        metadata=_saelens_metadata(meta))
    return _fill(sae, state, directory / SAELENS_WEIGHTS)


def _saelens_architecture(cfg: dict[str, Any], where: Path) -> tuple[str, dict[str, Any]]:
    """(sae_lab architecture, its extra config fields) of a SAELens cfg.json."""
    name = cfg.get("architecture") or "standard"
    if name == "standard" and cfg.get("activation_fn_str") == "topk":  # before v6
        name, cfg = "topk", {**cfg, "k": (cfg.get("activation_fn_kwargs") or {}).get("k")}
    if name not in SAELENS_ARCHITECTURES:
        raise ValueError(f"{where}: SAELens architecture {name!r} has no sae_lab counterpart "
                         f"(known: {', '.join(SAELENS_ARCHITECTURES)})")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{where}: rescale_acts_by_decoder_norm=true is not supported")
    if name == "topk":
        if not isinstance(cfg.get("k"), int):
            raise ValueError(f"{where}: a topk SAE without an integer k")
        return "topk", {"k": cfg["k"]}
    return SAELENS_ARCHITECTURES[name], {}


def _saelens_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"source_layout": "saelens"}
    if meta.get("model_name"):
        out["model"] = meta["model_name"]
    if meta.get("context_size"):
        out["ctx_len"] = meta["context_size"]
    hook = meta.get("hook_name")
    if hook:
        out["hook_name"] = hook
    layer, ours = meta.get("sae_lab_layer"), meta.get("sae_lab_hook")
    if layer is None and isinstance(hook, str):
        m = re.fullmatch(r"blocks\.(\d+)\.(hook_\w+)", hook)
        if m and m.group(2) in _TL_HOOKS and int(m.group(1)) + _TL_HOOKS[m.group(2)][0] >= 0:
            offset, ours = _TL_HOOKS[m.group(2)]
            layer = int(m.group(1)) + offset
    if layer is not None:
        out.update(layer=int(layer), hook=ours or "resid_post")
    return out


# --- sparsify --------------------------------------------------------------------------------


def from_sparsify(directory: Path) -> SAE:
    cfg_path = directory / CONFIG_FILE
    cfg = read_config(cfg_path)
    weights = directory / SPARSIFY_WEIGHTS
    t = _float32(read_weights(weights))
    _need(t, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), weights)
    if cfg.get("skip_connection") or "W_skip" in t or cfg.get("transcode"):
        raise ValueError(f"{cfg_path}: skip connections / transcoders are not supported")
    k = cfg.get("k")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"{cfg_path}: no integer k (not a sparsify TopK SAE?)")
    d_sae, d_in = t["encoder.weight"].shape
    state = {"W_enc": t["encoder.weight"].T.contiguous(), "b_enc": t["encoder.bias"],
             "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    sae = ARCHITECTURES["topk"](sae_config("topk", d_in=d_in, d_sae=d_sae, k=k),
                                metadata=_sparsify_metadata(directory.name))
    return _fill(sae, state, weights)


def _sparsify_metadata(hookpoint: str) -> dict[str, Any]:
    """layer and hook from a sparsify folder name (its hookpoint, e.g. layers.6 or
    layers.6.mlp); the hookpoint alone when it is another module."""
    out: dict[str, Any] = {"source_layout": "sparsify", "hookpoint": hookpoint}
    m = re.fullmatch(r"(?:.*\.)?layers\.(\d+)(\.\w+)?", hookpoint)
    if m and (m.group(2) or "") in _SPARSIFY_HOOKS:
        out.update(layer=int(m.group(1)), hook=_SPARSIFY_HOOKS[m.group(2) or ""])
    return out


# --- shared ----------------------------------------------------------------------------------


def _float32(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.float() for k, v in tensors.items()}


def _need(tensors: dict[str, Tensor], names: tuple[str, ...], where: Path) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{where}: missing tensors {missing} (has {sorted(tensors)})")


@torch.no_grad()
def _fill(sae: SAE, state: dict[str, Tensor], where: Path) -> SAE:
    """Copy `state` into `sae` (every parameter and non-training buffer, shapes checked)."""
    own = {k: v for k, v in sae.state_dict().items() if k not in TRAINING_BUFFERS}
    if set(own) != set(state):
        raise ValueError(f"{where}: tensors {sorted(state)} do not make a {sae.name} SAE "
                         f"({sorted(own)})")
    for name, tensor in state.items():
        if own[name].shape != tensor.shape:
            raise ValueError(f"{where}: {name} is {list(tensor.shape)}, expected "
                             f"{list(own[name].shape)}")
        if bool(torch.isnan(tensor).any()):
            raise ValueError(f"{where}: {name} holds NaN")
        own[name].copy_(tensor)
    return sae.eval()
