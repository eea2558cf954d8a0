"""`sae-lab harvest | train | sweep | eval | export | inspect | features | steer | demo`.

Each command lives next to the code it drives and registers itself with `add_parser(sub)`;
this file only wires them and turns expected errors into one-line messages.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from sae_lab.cli.args import DefaultsFormatter, int_at_least  # noqa: F401  (re-exported)
from sae_lab.version import __version__

# Errors a user can fix from the message alone: printed as one line, exit code 2. (ConfigError
# and ShardError are ValueErrors; naming ValueError keeps this import-free for a fast --help.)
USER_ERRORS = (OSError, ValueError, KeyError, FloatingPointError)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from sae_lab.training.config import reference

    rows = "\n".join(f"  {name}: {tp} = {default!r}\n      {doc}"
                     for name, tp, default, doc in reference())
    p = sub.add_parser(
        "train",
        help="train one SAE from a YAML config",
        description="Train one SAE. The config is YAML; any field can be set with --set.",
        epilog="config fields (name: type = default; `sae-lab schema` writes them as JSON "
        "Schema for editors):\n" + rows,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config (omit to use every default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set sae.k=64 --set lr=1e-3")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in out_dir from checkpoints/last.ckpt (without it, an "
                   "existing run directory is refused)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)


DATA_SOURCES = ("synthetic", "npy", "shards", "live")


def _data_source_overrides(overrides: list[str]) -> list[str]:
    """`--set data.shards=...` replaces the data source of the file (a printed config names the
    default synthetic one): the other sources are set to null first."""
    keys = {o.split("=", 1)[0] for o in overrides}
    chosen = [s for s in DATA_SOURCES if any(k == f"data.{s}" or k.startswith(f"data.{s}.")
                                              for k in keys)]
    if len(chosen) != 1:
        return overrides
    return [f"data.{s}=null" for s in DATA_SOURCES if s != chosen[0]] + overrides


def train_config(args: argparse.Namespace):  # -> TrainConfig
    from sae_lab.training.config import TrainConfig, apply_overrides

    overrides = _data_source_overrides(args.overrides)
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_dict(apply_overrides({}, overrides))


def cmd_train(args: argparse.Namespace) -> None:
    import shlex

    import yaml

    cfg = train_config(args)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    from sae_lab.training.run import TrainingInterrupted, resume_point, train

    ckpt = resume_point(cfg, args.resume)  # checks the run directory; writes nothing
    try:
        result = train(cfg, ckpt_path=ckpt)
    except TrainingInterrupted as e:
        again = ["sae-lab", "train", *([args.config] if args.config else []),
                 *(a for o in args.overrides for a in ("--set", o)), "--resume"]
        print(f"sae-lab train: {e}; continue with: {shlex.join(again)}", file=sys.stderr)
        sys.exit(130)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
    print(f"final metrics on {result.held_out}; dead_frac: share of latents that "
          f"{result.sae.dead_meaning}")
    print(f"saved: {result.out_dir / 'final'}")


# One line per command: name, its one-line help, and "module:function" that adds its subparser.
# Only the module of the command being run is imported (and modules keep torch, ray and
# transformers inside their command functions), so `sae-lab --help` and `sae-lab CMD --help`
# stay fast; the others are listed with their help line only. tests/cli/test_cli_help.py checks that
# these help lines are the ones the modules register.
COMMANDS = [
    ("harvest", "store a model's activations as WebDataset shards",
     "sae_lab.data.harvest:add_harvest_parser"),
    ("train", "train one SAE from a YAML config", "sae_lab.cli:add_train_parser"),
    ("sweep", "run a Ray Tune sweep of SAE trainings", "sae_lab.sweep.cli:add_parser"),
    ("eval", "held-out metrics of an SAE, and its downstream loss",
     "sae_lab.evaluate:add_eval_parser"),
    ("export", "write an SAE in another library's format (SAELens v6)",
     "sae_lab.export:add_export_parser"),
    ("inspect", "top-activating contexts of each latent, as a static HTML feature browser",
     "sae_lab.reading.browser:add_inspect_parser"),
    ("features", "which latents fire on a text: top latents per token and over the whole text",
     "sae_lab.reading.features:add_features_parser"),
    ("steer", "generate with several SAE latent edits (scale, add, clamp), side by side",
     "sae_lab.reading.steer:add_steer_parser"),
    ("explain", "explain latents with an LLM (title + explanation) and score them by detection",
     "sae_lab.reading.explain:add_explain_parser"),
    ("probe", "linear and prototype probes on SAE latents vs. raw activations, from labelled text",
     "sae_lab.reading.probe:add_probe_parser"),
    ("serve", "a local web page: type text, see the latents that fire on each token",
     "sae_lab.reading.serve:add_serve_parser"),
    ("demo", "the whole path on CPU, offline: harvest MiniLM, sweep, plot, export, browse",
     "sae_lab.demo:add_parser"),
    ("plan", "disk and memory a harvest, train or sweep config needs",
     "sae_lab.plan:add_plan_parser"),
    ("schema", "write JSON Schemas of the train and sweep YAML files",
     "sae_lab.schema:add_schema_parser"),
]


# Commands that first check that their run fits (sae_lab.plan) unless --no-plan-check.
PLANNED = ("harvest", "train", "sweep")


def check_plan(args: argparse.Namespace) -> None:
    """Refuse (PlanError, one line) a harvest / train / sweep that would cross a limit of this
    machine, before it loads a model or writes a file. A config the plan cannot be made from is
    left to the command itself, whose error names the culprit."""
    from sae_lab import plan

    try:
        if args.command == "harvest":
            from sae_lab.cli.args import config_from_args
            from sae_lab.data.harvest import HarvestConfig

            p = plan.plan_harvest(config_from_args(HarvestConfig, args))
        elif args.command == "train" and not args.print_config:
            p = plan.plan_train(train_config(args))
        elif args.command == "sweep" and not args.check:
            from sae_lab.sweep.cli import default_out
            from sae_lab.sweep.schema import load_sweep

            sweep = load_sweep(args.config, args.set, args.shards)
            p = plan.plan_sweep(sweep)
            p.disk_path = args.out or default_out(sweep.name)
        else:
            return
    except Exception:
        return
    plan.check(p)


def _register(target: str) -> Callable[[argparse._SubParsersAction], None]:
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


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
    for name, text, target in COMMANDS:
        if argv is None or name == wanted:
            _register(target)(sub)
            if name in PLANNED:
                sub.choices[name].add_argument(
                    "--no-plan-check", action="store_true",
                    help="skip the check that the run fits this machine's free disk, RAM and "
                    "GPU memory (see `sae-lab plan`)")
        else:
            sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command in PLANNED and not args.no_plan_check:
            check_plan(args)
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


if __name__ == "__main__":
    main()
