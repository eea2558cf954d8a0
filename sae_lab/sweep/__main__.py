"""`python -m sae_lab.sweep SWEEP.yaml ...`: the `sae-lab sweep` subcommand on its own."""

import sys

from sae_lab.sweep.cli import _standalone

sys.exit(_standalone())
