"""`sae-lab harvest`: one flag per HarvestConfig field."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sae_lab.cli.args import add_config_arguments, command, config_from_args

if TYPE_CHECKING:
    from sae_lab.data.harvest import HarvestConfig
    from sae_lab.plan import Plan


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from sae_lab.data import harvest

    p = command(sub, "harvest", harvest.__doc__.split("\n\n")[0])
    add_config_arguments(p, harvest.HarvestConfig, flags={"layers": "--layer"})
    return p


def harvest_config(args: argparse.Namespace) -> HarvestConfig:
    from sae_lab.data.harvest import HarvestConfig

    return config_from_args(HarvestConfig, args)


def plan(args: argparse.Namespace) -> Plan:
    from sae_lab.plan import plan_harvest

    return plan_harvest(harvest_config(args))


def run(args: argparse.Namespace) -> None:
    from sae_lab.data.harvest import harvest

    harvest(harvest_config(args))
