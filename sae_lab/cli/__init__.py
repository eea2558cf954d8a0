"""`sae-lab harvest | train | sweep | eval | export | inspect | features | steer | ...`.

One module per command in this package (`sae_lab.cli.<module>`), each with `add_parser(sub)`
(returns the command's parser) and `run(args)`; PLANNED commands also have `plan(args)`. This
file lists them and imports only the module of the command being run, so `sae-lab --help`,
`sae-lab CMD --help` and a config error come back without torch, Ray or Lightning; it turns
expected errors into one-line messages (exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from sae_lab.version import __version__

# Errors a user can fix from the message alone: printed as one line, exit code 2. (ConfigError
# and ShardError are ValueErrors; naming ValueError keeps this import-free for a fast --help.)
USER_ERRORS = (OSError, ValueError, KeyError, FloatingPointError)

# One line per command: name, its one-line help (tests/test_cli_help.py checks that it is the
# one its module registers), and its module in sae_lab.cli.
COMMANDS = [
    ("harvest", "store a model's activations as WebDataset shards", "harvest"),
    ("train", "train one SAE from a YAML config", "train"),
    ("sweep", "run a Ray Tune sweep of SAE trainings", "sweep"),
    ("eval", "held-out metrics of an SAE, and its downstream loss", "evaluate"),
    ("export", "write an SAE in another library's format (SAELens v6)", "export"),
    ("inspect", "top-activating contexts of each latent, as a static HTML feature browser",
     "inspect"),
    ("features", "which latents fire on a text: top latents per token and over the whole text",
     "features"),
    ("steer", "generate with several SAE latent edits (scale, add, clamp), side by side",
     "steer"),
    ("explain", "explain latents with an LLM (title + explanation) and score them by detection",
     "explain"),
    ("probe", "linear and prototype probes on SAE latents vs. raw activations, from labelled text",
     "probe"),
    ("serve", "a local web page: type text, see the latents that fire on each token", "serve"),
    ("push", "upload an SAE or a sweep's best SAEs to the Hugging Face Hub, with a model card",
     "push"),
    ("bench", "score SAEs beyond FVU and L0: core, sparse probing, absorption, autointerp; "
     "one table, one plot", "bench"),
    ("compare", "SAEs from sweeps, folders and the Hub on one Pareto plot and table, same rows",
     "compare"),
    ("demo", "the whole path on CPU, offline: harvest MiniLM, sweep, plot, export, browse",
     "demo"),
    ("plan", "disk and memory a harvest, train or sweep config needs", "plan"),
    ("schema", "write JSON Schemas of the train and sweep YAML files", "schema"),
]

# Commands that first check that their run fits (sae_lab.plan) unless --no-plan-check.
PLANNED = ("harvest", "train", "sweep")


def command_module(name: str) -> ModuleType:
    """sae_lab.cli.<module> of command `name`."""
    module = next(m for n, _, m in COMMANDS if n == name)
    return importlib.import_module(f"{__name__}.{module}")


def check_plan(args: argparse.Namespace) -> None:
    """Refuse (PlanError, one line) a harvest / train / sweep that would cross a limit of this
    machine, before it loads a model or writes a file. A config the plan cannot be made from is
    left to the command itself, whose error names the culprit."""
    from sae_lab.plan import check

    try:
        plan = command_module(args.command).plan(args)
    except Exception:
        return
    if plan is not None:
        check(plan)


def _command_in(argv: list[str]) -> str | None:
    """The command named in argv (the first word that is not a top-level option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `sae-lab` parser; with `argv`, only the command it names is fully registered."""
    parser = argparse.ArgumentParser(
        prog="sae-lab",
        description="Harvest language-model activations, train and sweep sparse autoencoders, "
        "then evaluate, export, inspect and steer them.",
    )
    parser.add_argument("--version", action="version", version=f"sae-lab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = None if argv is None else _command_in(argv)
    for name, text, _ in COMMANDS:
        if argv is not None and name != wanted:
            sub.add_parser(name, help=text, add_help=False)
            continue
        module = command_module(name)
        p = module.add_parser(sub)
        p.set_defaults(func=module.run)
        if name in PLANNED:
            p.add_argument("--no-plan-check", action="store_true",
                           help="skip the check that the run fits this machine's free disk, RAM "
                           "and GPU memory (see `sae-lab plan`)")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command in PLANNED and not args.no_plan_check:
            check_plan(args)
        if args.command not in PLANNED:
            from sae_lab.cli.args import resolve_sae_args

            resolve_sae_args(args)
        args.func(args)
    except USER_ERRORS as e:
        if args.debug or os.environ.get("SAE_LAB_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"sae-lab {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"sae-lab {args.command}: interrupted. {e}", file=sys.stderr)
        sys.exit(130)
