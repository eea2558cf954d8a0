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

import textwrap
from typing import Any, NamedTuple

import torch
from torch import nn

from sae_lab.lm.splice import edit_activation
from sae_lab.reading.edits import Steering


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


def check_causal(name: str) -> None:
    """A one-line error when model `name` cannot generate, read from its config alone (before
    minutes of loading weights)."""
    from transformers import AutoConfig

    from sae_lab.lm.load import is_causal, resolve_model

    if not is_causal(AutoConfig.from_pretrained(resolve_model(name))):
        raise ValueError(f"model {name} is not a causal LM; steering needs one to generate")
