"""Edit a model's activation at a hook point during its forward passes.

    with edit_activation(model, layer, hook, fn):
        model(ids)          # the output of hook_module(model, layer, hook) becomes fn(activation)

Used to splice an SAE's reconstruction into the model (downstream loss), to zero-ablate a hook,
and to steer generation along a latent's decoder direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from sae_lab.lm.hooks import hook_module, output_tensor, replace_output

Edit = Callable[[Tensor], Tensor]


@contextmanager
def edit_activation(model: nn.Module, layer: int, hook: str, fn: Edit,
                    d_in: int | None = None) -> Iterator[None]:
    """Replace the activation [B, T, d] at (layer, hook) by fn(activation) while inside.

    With `d_in`, an activation of another width is a one-line error naming the hook.
    """
    module = hook_module(model, layer, hook)

    def on_forward(mod: nn.Module, args: Any, output: Any) -> Any:
        act = output_tensor(output)
        if d_in is not None and act.shape[-1] != d_in:
            raise ValueError(
                f"SAE d_in={d_in} does not match the model's layer {layer} {hook} width "
                f"{act.shape[-1]}"
            )
        return replace_output(output, fn(act).to(act.dtype))

    handle = module.register_forward_hook(on_forward)
    try:
        yield
    finally:
        handle.remove()
