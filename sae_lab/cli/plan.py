"""`sae-lab plan CONFIG.yaml`: the disk and memory a harvest, train or sweep config needs."""

from __future__ import annotations

import argparse

from sae_lab.cli.args import checked, command


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from sae_lab import plan

    size = checked(plan.parse_size)
    p = command(sub, "plan", plan.__doc__.split("\n\n")[0], formatter_class=argparse.HelpFormatter)
    p.add_argument("config", help="a sweep, train or harvest YAML (told apart by their keys)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field first, e.g. --set batch_size=8192")
    p.add_argument("--gpus", type=int, metavar="N",
                   help="plan for a machine with N GPUs (e.g. 2 for Kaggle's T4 x2) instead of "
                   "this one; only the limits given below are then checked")
    p.add_argument("--gpu-memory", type=size, metavar="SIZE",
                   help="with --gpus: memory of each GPU, e.g. 15GiB (a T4); also what packs "
                   "are sized against (pack: auto)")
    p.add_argument("--disk", type=size, metavar="SIZE",
                   help="disk at the output to check against instead of this machine's free "
                   "disk, e.g. 20GB (Kaggle's /kaggle/working)")
    p.add_argument("--ram", type=size, metavar="SIZE",
                   help="host RAM to check against instead of this machine's, e.g. 29GiB")
    p.add_argument("--out", help="where the run will write (a sweep's --out): the disk checked")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.plan import check, human, limits_for, plan_file

    plan = plan_file(args.config, args.overrides, args.gpus, args.gpu_memory)
    if args.out:
        plan.disk_path = args.out
    print(plan.table())
    limits = limits_for(plan, args.gpus, args.disk, args.ram, args.gpu_memory)
    for where, (have, what) in limits.items():
        need = plan.total(where)
        verdict = "fits" if need <= have else "DOES NOT FIT"
        print(f"  {where}: {human(need)} needed, {what} {human(have)}: {verdict}")
    check(plan, limits)
