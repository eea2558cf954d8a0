"""Find the module whose output is a hook point (resid_post, mlp_out, attn_out) in a HF model.

    hook_module(model, layer, hook)  -> nn.Module   its output (first element when the module
                                                     returns a tuple) is the activation
    hook_name(layer, hook)           -> "blocks.{layer}.hook_{hook}"   (TransformerLens / SAELens)
    capture(model, layers, hook)     -> context manager collecting those outputs in one forward
    capture_points(model, [(layer, hook), ...])  -> the same for several hook points
    unembedding(model)               -> [vocab, d_model] output embedding, or None

resid_post is the block's output; mlp_out and attn_out are what the MLP and the attention add
to the residual stream (Gemma 2/3: after their post-sub-layer norms; post-LN BERT: the output
projections, before dropout, residual and LayerNorm).
Models are looked up by `config.model_type`; unknown types fall back to a search over the common
attribute names, and an error lists every name tried.

Steering and SAE splicing reuse `hook_module` with `output_tensor` / `replace_output` to
edit the activation in a forward hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

Hook = Literal["resid_post", "mlp_out", "attn_out"]
HOOKS: tuple[str, ...] = ("resid_post", "mlp_out", "attn_out")


class LayerError(ValueError):
    """A layer or hook that the model does not have; the message lists what it does have."""


@dataclass(frozen=True)
class Family:
    """Where the blocks live (relative to `model.base_model`) and the sub-modules of one block."""

    blocks: tuple[str, ...]
    attn: tuple[str, ...]
    mlp: tuple[str, ...]


_DECODER = Family(blocks=("layers",), attn=("self_attn",), mlp=("mlp",))
FAMILIES: dict[str, Family] = {
    "gpt2": Family(blocks=("h",), attn=("attn",), mlp=("mlp",)),
    "gpt_neox": Family(blocks=("layers",), attn=("attention",), mlp=("mlp",)),
    "llama": _DECODER,
    "mistral": _DECODER,
    "qwen2": _DECODER,
    "phi3": _DECODER,
    "gemma": _DECODER,
    # Gemma 2/3 normalise each sub-layer's output before adding it: hook the norms.
    "gemma2": Family(blocks=("layers",), attn=("post_attention_layernorm",),
                     mlp=("post_feedforward_layernorm",)),
    "gemma3_text": Family(blocks=("layers",), attn=("post_attention_layernorm",),
                          mlp=("post_feedforward_layernorm",)),
    # Post-LN: the attention and MLP output projections, before dropout + residual + LayerNorm.
    "bert": Family(blocks=("encoder.layer",), attn=("attention.output.dense",),
                   mlp=("output.dense",)),
}
GENERIC = Family(
    blocks=("layers", "h", "blocks", "encoder.layer", "encoder.layers", "decoder.layers",
            "transformer.h", "transformer.layers", "transformer.blocks", "model.layers"),
    attn=("self_attn", "attn", "attention", "self_attention", "attention.output.dense"),
    mlp=("mlp", "feed_forward", "ffn", "ff", "output.dense"),
)


def family_name(model: nn.Module) -> str:
    """`config.model_type` when it has an entry in FAMILIES, else "generic"."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return model_type if model_type in FAMILIES else "generic"


def blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks."""
    base = getattr(model, "base_model", model)
    fam = FAMILIES.get(family_name(model), GENERIC)
    tried = []
    for root_name, root in (("base_model", base), ("model", model)):
        for path in fam.blocks + GENERIC.blocks:
            found = _get(root, path)
            if isinstance(found, nn.ModuleList) and len(found) > 0:
                return found
            tried.append(f"{root_name}.{path}")
    raise LayerError(
        f"cannot find the transformer blocks of {type(model).__name__}: looked for an "
        f"nn.ModuleList at {sorted(set(tried))}"
    )


def n_layers(model: nn.Module) -> int:
    return len(blocks(model))


def hook_module(model: nn.Module, layer: int, hook: str = "resid_post") -> nn.Module:
    """The module whose output is `hook` at `layer` (see the module docstring)."""
    if hook not in HOOKS:
        raise LayerError(f"unknown hook {hook!r}; choose one of {list(HOOKS)}")
    layers = blocks(model)
    if not 0 <= layer < len(layers):
        raise LayerError(
            f"layer {layer} is out of range: {type(model).__name__} has {len(layers)} layers "
            f"(valid: 0..{len(layers) - 1})"
        )
    block = layers[layer]
    if hook == "resid_post":
        return block
    fam = FAMILIES.get(family_name(model), GENERIC)
    names = (fam.attn if hook == "attn_out" else fam.mlp)
    names = names + tuple(n for n in (GENERIC.attn if hook == "attn_out" else GENERIC.mlp)
                          if n not in names)
    for name in names:
        found = _get(block, name)
        if isinstance(found, nn.Module):
            return found
    raise LayerError(
        f"cannot find {hook} in block {layer} ({type(block).__name__}) of "
        f"{type(model).__name__}: looked for sub-modules {list(names)}; it has "
        f"{[n for n, _ in block.named_children()]}"
    )


def hook_name(layer: int, hook: str) -> str:
    return f"blocks.{layer}.hook_{hook}"


def output_tensor(output: Any) -> Tensor:
    """The activation in a module's output: the tensor itself or the first element of a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


def replace_output(output: Any, new: Tensor) -> Any:
    """`output` with its activation replaced by `new`; return it from a forward hook."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


class StopForward(Exception):
    """Raised from a hook to skip the rest of the forward pass once every hook has fired."""


def capture(
    model: nn.Module, layers: list[int], hook: str = "resid_post", stop_early: bool = True
) -> AbstractContextManager[dict[int, Tensor]]:
    """Collect {layer: activation [B, T, d]} during forward passes run inside the block.

    With `stop_early`, the forward pass is cut short (StopForward, caught by `run_to_hooks`)
    once every hook has fired: harvesting layer 3 of a 32-layer model then costs 4 blocks.
    """
    mods = {layer: hook_module(model, layer, hook) for layer in layers}
    return _capture(mods, max(layers) if stop_early else None)


def capture_points(
    model: nn.Module, points: list[tuple[int, str]], stop_early: bool = True
) -> AbstractContextManager[dict[tuple[int, str], Tensor]]:
    """`capture` for several (layer, hook) points, collected as {(layer, hook): activation}."""
    mods = {p: hook_module(model, *p) for p in points}
    last = max(points, key=lambda p: (p[0], HOOKS_IN_ORDER.index(p[1])))
    return _capture(mods, last if stop_early else None)


HOOKS_IN_ORDER = ("attn_out", "mlp_out", "resid_post")
"""The order in which a block's hook points fire."""


@contextmanager
def _capture(mods: dict[Any, nn.Module], last: Any) -> Iterator[dict[Any, Tensor]]:
    """`last`: the key whose hook fires last in a forward pass (stop there), None: run on."""
    acts: dict[Any, Tensor] = {}
    handles = []

    def make(key: Any):
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            acts[key] = output_tensor(output).detach()
            if key == last and len(acts) == len(mods):
                raise StopForward

        return fn

    for key, mod in mods.items():
        handles.append(mod.register_forward_hook(make(key)))
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def run_to_hooks(model: nn.Module, **inputs: Tensor) -> None:
    """model(**inputs), stopping quietly when a `capture` hook raises StopForward."""
    try:
        model(**inputs)
    except StopForward:
        pass


def unembedding(model: nn.Module) -> Tensor | None:
    """The output embedding [vocab, d_model] (tied or not), or None for models without one."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    weight = getattr(head, "weight", None)
    return weight if isinstance(weight, Tensor) else None


def _get(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
