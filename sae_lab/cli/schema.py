"""Write train.schema.json and sweep.schema.json, for editors that complete and check YAML
(yaml-language-server).
"""

from __future__ import annotations

import argparse

from sae_lab.cli.args import command


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "schema", __doc__, formatter_class=argparse.HelpFormatter)
    p.add_argument("--out", default=".", help="directory to write them into")
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.schema import write_schemas

    for path in write_schemas(args.out):
        print(path)
