"""Steer a model with one SAE latent, and show the generation next to the unsteered one.

    add:    h <- h + scale * W_dec[i]                   at every position, at the SAE's hook
    clamp:  h <- h + (scale - z_i(h)) * W_dec[i]        the latent's activation set to `scale`,
                                                        everything else (and the SAE's error) kept

"Add" is activation steering along the decoder direction (Templeton et al. 2024 clamp features
to multiples of their maximum; Turner et al. 2023 add steering vectors); "clamp" edits only
latent i's contribution to the reconstruction.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from sae_lab.analysis.contexts import check_latent
from sae_lab.analysis.splice import edit_activation
from sae_lab.sae.base import SAE

Mode = Literal["add", "clamp"]


def steering_edit(sae: SAE, latent: int, scale: float, mode: Mode = "add"
                  ) -> Callable[[Tensor], Tensor]:
    """act [B, T, d] -> steered act."""
    check_latent(latent, sae.d_sae)
    direction = sae.W_dec[latent].detach()  # [d_in]
    if mode == "add":
        return lambda act: act + scale * direction.to(act)
    if mode == "clamp":
        sae.eval()

        def clamp(act: Tensor) -> Tensor:
            flat = act.reshape(-1, act.shape[-1]).to(sae.W_enc.dtype)  # SAEs take [N, d_in]
            z = sae.encode(flat)[:, latent].view(*act.shape[:-1], 1)  # [B, T, 1]
            return act + ((scale - z) * direction).to(act)

        return clamp
    raise ValueError(f"unknown steering mode {mode!r}; choose add or clamp")


class Steered(NamedTuple):
    prompt: str
    unsteered: str
    steered: str


@torch.no_grad()
def steer(
    model: nn.Module,
    tokenizer: Any,
    sae: SAE,
    latent: int,
    scale: float,
    prompt: str,
    layer: int,
    hook: str,
    mode: Mode = "add",
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
) -> Steered:
    """Generate from `prompt` without and with the steering edit (same seed, same settings)."""
    edit = steering_edit(sae, latent, scale, mode)
    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad,
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        kwargs["temperature"] = temperature

    def generate() -> str:
        torch.manual_seed(seed)
        out = model.generate(**enc, **kwargs)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    plain = generate()
    with edit_activation(model, layer, hook, edit, d_in=sae.d_in):
        steered = generate()
    return Steered(prompt, plain, steered)


def format_side_by_side(result: Steered, latent: int, scale: float, mode: Mode) -> str:
    label = f"steered (latent {latent}, {mode} {scale:g})"
    return (f"prompt: {result.prompt}\n\n"
            f"unsteered:\n{result.prompt}{result.unsteered}\n\n"
            f"{label}:\n{result.prompt}{result.steered}\n")


# --- command line: `sae-lab steer` -------------------------------------------------------------


def add_steer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "steer",
        help="generate with one latent's decoder direction added (or the latent clamped)",
        description="Generate from --prompt twice, without and with steering at the SAE's hook, "
        "and print both. add: h + scale * W_dec[latent] at every position; clamp: the latent's "
        "activation set to scale. Greedy unless --temperature > 0 (then same seed for both).",
    )
    p.add_argument("--sae", required=True, help="SAE directory")
    p.add_argument("--latent", type=int, required=True, help="latent index")
    p.add_argument("--scale", type=float, required=True, help="added multiple of W_dec[latent], "
                   "or the clamped activation")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--model", help="causal LM (default: the SAE's model)")
    p.add_argument("--mode", choices=["add", "clamp"], default="add")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    p.add_argument("--seed", type=int, default=0)
    from sae_lab.analysis.lm import add_hook_args

    add_hook_args(p)
    p.set_defaults(func=cmd_steer)


def cmd_steer(args: argparse.Namespace) -> None:
    from sae_lab.analysis.lm import (
        hook_point,
        is_causal,
        load_lm,
        load_sae_dir,
        model_name,
        resolve_device,
    )

    device = resolve_device(args.device)
    sae = load_sae_dir(args.sae, device)
    check_latent(args.latent, sae.d_sae)
    layer, hook = hook_point(sae, args.layer, args.hook)
    name = model_name(sae, args.model)
    model, tokenizer = load_lm(name, device)
    if not is_causal(model.config):
        raise ValueError(f"model {name} is not a causal LM; steering needs one to generate")
    result = steer(model, tokenizer, sae, args.latent, args.scale, args.prompt, layer, hook,
                   args.mode, args.max_new_tokens, args.temperature, args.seed)
    print(format_side_by_side(result, args.latent, args.scale, args.mode))
