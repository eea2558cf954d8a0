"""Generate from --prompt twice, without and with the edits at the SAE's hook, and print both side
by side. Edits, in the order given: LATENT:xN scales the latent's activation, LATENT:+N adds N *
W_dec[LATENT], LATENT:=N clamps the activation to N; LATENT 'all' edits every latent (--edit
all:x0.5 --edit 123:+4 halves them all, then adds one). --splice runs the model on the SAE's
reconstruction. Greedy unless --temperature > 0 (then the same seed for both).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from sae_lab.cli.args import SAE_DIR_HELP, add_hook_args, checked, command, open_lm

if TYPE_CHECKING:
    from sae_lab.reading.edits import LatentEdit


def parse_edit(spec: str) -> LatentEdit:
    from sae_lab.reading.edits import parse_edit

    return parse_edit(spec)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "steer", __doc__, formatter_class=argparse.HelpFormatter)
    p.add_argument("--sae", required=True, help=SAE_DIR_HELP)
    p.add_argument("--edit", dest="edits", action="append", default=[], type=checked(parse_edit),
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
    add_hook_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    edits: list[LatentEdit] = list(args.edits)
    if args.latent is not None:
        op = "+" if args.mode == "add" else "="
        edits.append(parse_edit(f"{args.latent}:{op}{args.scale:g}"))
    if not edits:
        raise ValueError("give at least one --edit LATENT:OP (or --latent I --scale S)")
    from sae_lab.lm.attach import load_lm
    from sae_lab.reading.edits import Steering, check_edits
    from sae_lab.reading.steer import check_causal, format_side_by_side, steer

    sae, device, layer, hook, name = open_lm(args, args.sae)
    check_edits(edits, sae.d_sae)
    check_causal(name)  # on the config, before minutes of loading weights
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
