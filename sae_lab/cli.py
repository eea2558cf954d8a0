"""`sae-lab harvest | train | sweep | eval | export | inspect | steer | demo`.

Each command lives next to the code it drives and registers itself with `add_parser(sub)`;
this file only wires them and turns expected errors into one-line messages.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from sae_lab.sae.config import ConfigError

# Errors a user can fix from the message alone: printed as one line, exit code 2.
USER_ERRORS = (ConfigError, OSError, ValueError, KeyError, FloatingPointError)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from sae_lab.train.config import reference

    rows = "\n".join(f"  {name} = {dflt!r}\n      {doc}" for name, _, dflt, doc in reference())
    p = sub.add_parser(
        "train",
        help="train one SAE from a YAML config",
        description="Train one SAE. The config is YAML; any field can be set with --set.",
        epilog="config fields (name = default):\n" + rows,
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


DATA_SOURCES = ("synthetic", "npy", "shards")


def _data_source_overrides(overrides: list[str]) -> list[str]:
    """`--set data.shards=...` replaces the data source of the file (a printed config names the
    default synthetic one): the other sources are set to null first."""
    keys = {o.split("=", 1)[0] for o in overrides}
    chosen = [s for s in DATA_SOURCES if any(k == f"data.{s}" or k.startswith(f"data.{s}.")
                                              for k in keys)]
    if len(chosen) != 1:
        return overrides
    return [f"data.{s}=null" for s in DATA_SOURCES if s != chosen[0]] + overrides


def cmd_train(args: argparse.Namespace) -> None:
    import shlex

    import yaml

    from sae_lab.train.config import TrainConfig, apply_overrides

    overrides = _data_source_overrides(args.overrides)
    if args.config:
        cfg = TrainConfig.from_yaml(args.config, overrides)
    else:
        cfg = TrainConfig.from_dict(apply_overrides({}, overrides))
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    from sae_lab.train.run import TrainingInterrupted, resume_point, train

    ckpt = resume_point(cfg, args.resume)  # checks the run directory; writes nothing
    try:
        result = train(cfg, ckpt_path=ckpt)
    except TrainingInterrupted as e:
        again = ["sae-lab", "train", *([args.config] if args.config else []),
                 *(a for o in args.overrides for a in ("--set", o)), "--resume"]
        print(f"sae-lab train: {e}; continue with: {shlex.join(again)}", file=sys.stderr)
        sys.exit(130)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
    print(f"final metrics on {result.held_out}")
    print(f"saved: {result.out_dir / 'final'}")


# One line per command: "module:function" that adds its subparser. Modules keep heavy imports
# (torch, ray, transformers) inside their command functions so `--help` stays fast.
COMMANDS = [
    "sae_lab.data.harvest:add_harvest_parser",
    "sae_lab.cli:add_train_parser",
    "sae_lab.sweep.cli:add_parser",
    "sae_lab.evaluate:add_eval_parser",
    "sae_lab.export:add_export_parser",
    "sae_lab.analysis.browser:add_inspect_parser",
    "sae_lab.analysis.steer:add_steer_parser",
    "sae_lab.demo:add_parser",
]


def _registrations() -> list[Callable[[argparse._SubParsersAction], None]]:
    return [getattr(importlib.import_module(m), f) for m, f in (c.split(":") for c in COMMANDS)]


def build_parser() -> argparse.ArgumentParser:
    from sae_lab import __version__

    parser = argparse.ArgumentParser(
        prog="sae-lab",
        description="Harvest language-model activations, train and sweep sparse autoencoders, "
        "then evaluate, export, inspect and steer them.",
    )
    parser.add_argument("--version", action="version", version=f"sae-lab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrations():
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
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
