"""Harvest all-MiniLM-L6-v2 activations over the standard library's docstrings (or --text), run
sweeps/demo.yaml on them with Ray Tune, print the results, write pareto.png, export the best SAEs
for SAELens and build a feature browser. A few minutes on 2 CPU cores; re-running continues an
interrupted run.
"""

from __future__ import annotations

import argparse

from sae_lab.cli.args import add_config_arguments, command, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from sae_lab.demo import DemoConfig

    p = command(sub, "demo", __doc__)
    add_config_arguments(p, DemoConfig, flags={"overrides": "--set"},
                         metavars={"overrides": "KEY=VALUE", "text": "FILE", "out": "DIR"})
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.demo import DemoConfig, run_demo

    run_demo(config_from_args(DemoConfig, args))
