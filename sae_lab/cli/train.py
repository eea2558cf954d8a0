"""`sae-lab train [CONFIG.yaml] [--set KEY=VALUE ...] [--resume] [--print-config]`."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from sae_lab.cli.args import command

if TYPE_CHECKING:
    from sae_lab.plan import Plan
    from sae_lab.training.config import TrainConfig

DATA_SOURCES = ("synthetic", "npy", "shards", "live")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from sae_lab.training.config import reference

    rows = "\n".join(f"  {name}: {tp} = {default!r}\n      {doc}"
                     for name, tp, default, doc in reference())
    p = command(
        sub, "train", "Train one SAE. The config is YAML; any field can be set with --set.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config fields (name: type = default; `sae-lab schema` writes them as JSON "
        "Schema for editors):\n" + rows)
    p.add_argument("config", nargs="?", help="YAML config (omit to use every default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set sae.k=64 --set lr=1e-3")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in out_dir from checkpoints/last.ckpt (without it, an "
                   "existing run directory is refused)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit")
    return p


def data_source_overrides(overrides: list[str]) -> list[str]:
    """`--set data.shards=...` replaces the data source of the file (a printed config names the
    default synthetic one): the other sources are set to null first."""
    keys = {o.split("=", 1)[0] for o in overrides}
    chosen = [s for s in DATA_SOURCES if any(k == f"data.{s}" or k.startswith(f"data.{s}.")
                                              for k in keys)]
    if len(chosen) != 1:
        return overrides
    return [f"data.{s}=null" for s in DATA_SOURCES if s != chosen[0]] + overrides


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The config CONFIG and --set name, validated (ConfigError names the culprit)."""
    from sae_lab.training.config import TrainConfig, apply_overrides

    overrides = data_source_overrides(args.overrides)
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_dict(apply_overrides({}, overrides))


def plan(args: argparse.Namespace) -> Plan | None:
    from sae_lab.plan import plan_train

    return None if args.print_config else plan_train(train_config(args))


def _train_parallel(cfg: TrainConfig, resume: bool):
    from sae_lab.config import ConfigError
    from sae_lab.training.launch import train_parallel

    if resume:
        raise ConfigError("--resume: a run with parallel set keeps no checkpoints yet")
    return train_parallel(cfg)


def run(args: argparse.Namespace) -> None:
    cfg = train_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return
    from sae_lab.training.run import TrainingInterrupted, resume_point, train

    ckpt = resume_point(cfg, args.resume)  # checks the run directory; writes nothing
    try:
        if cfg.parallel.ranks > 1:
            result = _train_parallel(cfg, args.resume)
        else:
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
