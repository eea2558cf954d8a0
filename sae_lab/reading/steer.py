"""Steer a model with several SAE latent edits at once, and show the generation next to the
unsteered one.

The edits (`sae_lab.reading.edits`): scale a latent's activation (`123:x30`), add a multiple of
its decoder direction (`456:+4`), clamp it (`789:=0`), or the same on every latent (`all:x0.5`);
at every position or only on the prompt; optionally splicing the SAE's reconstruction into the
model (`--splice`, dropping or keeping the error term). "Add" is activation steering along the
decoder direction (Turner et al. 2023 add steering vectors); "clamp" and "scale" edit only the
latent's contribution to the reconstruction (Templeton et al. 2024 clamp features to multiples of
their maximum).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any, NamedTuple

import torch
from torch import nn

from sae_lab.lm.splice import edit_activation
from sae_lab.reading.edits import LatentEdit, Steering, check_edits, edit_arg


class Steered(NamedTuple):
    prompt: str
    unsteered: str
    steered: str


@torch.no_grad()
def steer(
    model: nn.Module,
    tokenizer: Any,
    steering: Steering,
    prompt: str,
    layer: int,
    hook: str,
    max_new_tokens: int = 40,
    temperature: float = 0.0,
    seed: int = 0,
) -> Steered:
    """Generate from `prompt` without and with the edits (same seed, same settings).

    A `steering` made with `prompt_len=0` is set to the prompt's length here (prompt-only)."""
    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    if steering.prompt_len == 0:
        steering.prompt_len = enc["input_ids"].shape[1]
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
    steering.reset()
    with edit_activation(model, layer, hook, steering, d_in=steering.sae.d_in):
        steered = generate()
    return Steered(prompt, plain, steered)


def format_side_by_side(result: Steered, steering: Steering, width: int = 100) -> str:
    """Two columns, unsteered | steered, each the prompt and its continuation wrapped."""
    col = max(20, (width - 3) // 2)

    def lines(text: str) -> list[str]:
        out = []
        for para in text.split("\n"):
            out.extend(textwrap.wrap(para, col, replace_whitespace=False) or [""])
        return out

    left, right = lines(result.prompt + result.unsteered), lines(result.prompt + result.steered)
    rows = [f"{'unsteered':<{col}} | steered ({steering})", f"{'-' * col}-+-{'-' * col}"]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        rows.append(f"{a:<{col}} | {b}".rstrip())
    return f"prompt: {result.prompt}\n\n" + "\n".join(rows) + "\n"


# --- command line: `sae-lab steer` -------------------------------------------------------------


def add_steer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "steer",
        help="generate with several SAE latent edits (scale, add, clamp), side by side",
        description="Generate from --prompt twice, without and with the edits at the SAE's hook, "
        "and print both side by side. Edits, in the order given: LATENT:xN scales the latent's "
        "activation, LATENT:+N adds N * W_dec[LATENT], LATENT:=N clamps the activation to N; "
        "LATENT 'all' edits every latent (--edit all:x0.5 --edit 123:+4 halves them all, then "
        "adds one). --splice runs the model on the SAE's reconstruction. Greedy unless "
        "--temperature > 0 (then the same seed for both).",
    )
    p.add_argument("--sae", required=True, help="SAE directory")
    p.add_argument("--edit", dest="edits", action="append", default=[], type=edit_arg,
                   metavar="LATENT:OP", help="e.g. 123:x30, 456:+4, 789:=0, all:x0.5; repeat "
                   "for several")
    p.add_argument("--latent", type=int, help="one edit, the older form: --latent I --scale S "
                   "[--mode add|clamp] is --edit I:+S (add) or --edit I:=S (clamp)")
    p.add_argument("--scale", type=float, default=10.0, help="with --latent")
    p.add_argument("--mode", choices=["add", "clamp"], default="add", help="with --latent")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--prompt-only", action="store_true",
                   help="edit only the prompt's positions, not the generated ones")
    p.add_argument("--splice", nargs="?", const="drop-error", choices=["drop-error",
                   "keep-error"], help="run the model on the SAE's reconstruction of the edited "
                   "latents; drop-error (the default when given) leaves out the SAE's error, "
                   "keep-error adds it back")
    p.add_argument("--model", help="causal LM (default: the SAE's model)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=100, help="width of the side-by-side table")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    from sae_lab.lm.attach import add_hook_args

    add_hook_args(p)
    p.set_defaults(func=cmd_steer)


def cmd_steer(args: argparse.Namespace) -> None:
    if args.latent is not None:
        op = "+" if args.mode == "add" else "="
        args.edits.append(edit_arg(f"{args.latent}:{op}{args.scale:g}"))
    if not args.edits:
        raise ValueError("give at least one --edit LATENT:OP (or --latent I --scale S)")
    from sae_lab.lm.attach import (
        hook_point,
        is_causal,
        load_lm,
        load_sae_dir,
        model_name,
        resolve_device,
    )

    device = resolve_device(args.device)
    sae = load_sae_dir(args.sae, device)
    edits: list[LatentEdit] = args.edits
    check_edits(edits, sae.d_sae)
    layer, hook = hook_point(sae, args.layer, args.hook)
    name = model_name(sae, args.model)
    from transformers import AutoConfig

    from sae_lab.lm.load import resolve_model

    # Checked on the config, before minutes of loading weights.
    if not is_causal(AutoConfig.from_pretrained(resolve_model(name))):
        raise ValueError(f"model {name} is not a causal LM; steering needs one to generate")
    model, tokenizer = load_lm(name, device)
    steering = Steering(sae, edits, args.splice, 0 if args.prompt_only else None)
    result = steer(model, tokenizer, steering, args.prompt, layer, hook, args.max_new_tokens,
                   args.temperature, args.seed)
    if args.json:
        print(json.dumps({**result._asdict(), "edits": [str(e) for e in edits],
                          "prompt_only": args.prompt_only, "splice": args.splice},
                         ensure_ascii=False, indent=1))
    else:
        print(format_side_by_side(result, steering, args.width))
