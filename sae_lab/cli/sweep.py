"""`sae-lab sweep SWEEP.yaml [--address ADDR] [--resume] [--out DIR] [--set K=V] [--shards DIR]
[--push REPO_ID [--private] [--revision REV]]`

Ray and Lightning load only when a sweep runs, not for --help or --check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sae_lab.cli.args import command

if TYPE_CHECKING:
    from sae_lab.plan import Plan

DESCRIPTION = """\
Run a Ray Tune sweep of SAE trainings described by SWEEP.yaml (see sweeps/demo.yaml), then write
results.csv, pareto.png and best/ (loadable with sae_lab.load) under --out. The same file runs on
a laptop CPU, a GPU, Kaggle's two GPUs or a Ray cluster (--address). Ctrl-C (or SIGTERM) stops
the sweep with its state saved; --resume continues it without re-running finished trials.
--push REPO_ID uploads best/ to the Hugging Face Hub when the sweep ends (as `sae-lab push`).
Exit codes: 0 some trials measured, 1 every trial failed, 2 bad input, 130 interrupted."""

RESUME_HELP = ("continue an interrupted sweep in --out (Ray's state in OUT/tune/tuner.pkl is "
               "unpickled only if its sha256 is the one this sweep recorded and you own OUT)")
TRUST_HELP = ("with --resume: restore a Tune state the sweep did not record (an older sae_lab's, "
              "or another user's folder). Unpickling runs code: only for folders you trust")
PUSH_HELP = ("when the sweep (or a --resume of it) ends: upload best/ (each architecture's best "
             "SAE and the Pareto frontier's) with a model card and pareto.png to this Hub model "
             "repo, OWNER/NAME, as `sae-lab push` does. The repo id and the token (HF_TOKEN or "
             "the Hugging Face login) are checked before the sweep starts")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "sweep", DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="sweep YAML (a path, or the name of one in sweeps/)")
    p.add_argument("--out", help="output directory (default: runs/sweeps/<name>)")
    p.add_argument("--address", help="join a running Ray cluster, e.g. 10.0.0.1:6379 or auto")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--trust-state", action="store_true", help=TRUST_HELP)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field, e.g. --set num_samples=4 "
                        "--set base.max_tokens=1000000 (repeatable)")
    p.add_argument("--shards", help="train on this shard directory instead of base.data")
    p.add_argument("--check", action="store_true",
                   help="validate the sweep and print its trials; launch nothing")
    p.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    p.add_argument("--push", metavar="REPO_ID", help=PUSH_HELP)
    p.add_argument("--private", action="store_true", help="with --push: create the repo private")
    p.add_argument("--revision", help="with --push: the branch to push to (created when missing; "
                   "default main)")
    return p


def check_push(args: argparse.Namespace) -> None:
    """--push's repo id and token, before the sweep starts (one line, exit 2, nothing written)."""
    from sae_lab.config import ConfigError

    if args.push is None:
        if args.private or args.revision:
            raise ConfigError("--private and --revision go with --push REPO_ID")
        return
    from sae_lab.share.push import check_push as check_repo_and_token

    check_repo_and_token(args.push)


def push_results(args: argparse.Namespace, out: str, name: str) -> None:
    """What runs after a finished sweep with --push: best/ (and pareto.png, the model card) to
    the Hub."""
    from sae_lab.share.push import push

    url, paths = push(out, args.push, private=args.private, revision=args.revision,
                      commit_message=f"sae_lab sweep {name}")
    print(f"pushed {len(paths)} SAE(s) ({', '.join(paths)}) to {args.push}: {url}")


def resume_command(args: argparse.Namespace, out: str) -> str:
    flags = f" --push {args.push}" if args.push else ""
    flags += " --private" if args.private else ""
    flags += f" --revision {args.revision}" if args.revision else ""
    return f"sae-lab sweep {args.config} --resume --out {out}{flags}"


def default_out(name: str) -> str:
    """runs/sweeps/<name>; a name that is not a plain folder name ("../x", "a/b") is an error."""
    from sae_lab.config import ConfigError

    if not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"name={name!r}: must be a plain folder name (letters, digits, ._-; "
                          "no / or ..), since the default --out is runs/sweeps/<name>")
    return str(Path("runs/sweeps") / name)


def plan(args: argparse.Namespace) -> Plan | None:
    if args.check:
        return None
    from sae_lab.plan import plan_sweep
    from sae_lab.sweep.schema import load_sweep

    sweep = load_sweep(args.config, args.set, args.shards)
    p = plan_sweep(sweep)
    p.disk_path = args.out or default_out(sweep.name)
    return p


def run(args: argparse.Namespace) -> None:
    """Run (or --check) the sweep. Bad input raises ConfigError/FileNotFoundError naming the
    culprit; a sweep stopped with unfinished trials raises KeyboardInterrupt (exit code 130); a
    sweep in which no trial measured anything exits with code 1."""
    from sae_lab.sweep.schema import load_sweep, validate

    check_push(args)
    sweep = load_sweep(args.config, args.set, args.shards)
    out = args.out or default_out(sweep.name)
    if args.check:
        d_ins = validate(sweep).d_in
        for arch in sweep.architectures:
            keys = ", ".join(f"{k}={p.to_dict()}" for k, p in sweep.params[arch].items())
            print(f"{arch:9s} d_in={d_ins[arch]}  {keys}")
        # How many packs this machine runs needs torch and Ray's variant generator (seconds of
        # imports): `sae-lab plan` shows them; --check stays a quick look at the file.
        packed = f", packed (pack: {sweep.pack}; `sae-lab plan` shows the packs)" \
            if sweep.pack != 1 else ""
        print(f"{sweep.num_trials} trials, metric {sweep.metric} ({sweep.mode}), "
              f"scheduler {sweep.scheduler.type}, search {sweep.search}{packed}: OK")
        return
    from sae_lab.sweep.run import run_sweep

    result = run_sweep(sweep, out, address=args.address, resume=args.resume,
                       verbose=0 if args.quiet else 1, trust_state=args.trust_state)
    print(result.summary())
    if result.unfinished:
        raise KeyboardInterrupt(f"{len(result.unfinished)} trial(s) unfinished; continue with: "
                                f"{resume_command(args, out)}")
    if not result.measured:
        print(f"sae-lab sweep: error: {result.failure_summary()}", file=sys.stderr)
        raise SystemExit(1)
    from sae_lab.sweep.bench import bench_sweep

    bench_sweep(result, sweep)  # with `evaluate:`: the bench's table ends the output
    if args.push:
        push_results(args, out, sweep.name)
