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

from sae_lab.config import ConfigError

# Errors a user can fix from the message alone: printed as one line, exit code 2.
USER_ERRORS = (ConfigError, OSError, ValueError, KeyError, FloatingPointError)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    from sae_lab.train.config import reference

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
                   help="continue from out_dir/checkpoints/last.ckpt if it exists")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    import yaml

    from sae_lab.train.config import TrainConfig, apply_overrides

    if args.config:
        cfg = TrainConfig.from_yaml(args.config, args.overrides)
    else:
        cfg = TrainConfig.from_dict(apply_overrides({}, args.overrides))
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    from sae_lab.train.run import train

    ckpt = Path(cfg.out_dir) / "checkpoints" / "last.ckpt"
    result = train(cfg, ckpt_path=ckpt if args.resume and ckpt.is_file() else None)
    print(" ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
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
    "sae_lab.schema:add_schema_parser",
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
