"""`python -m sae_lab.cli ...`: the `sae-lab` command."""

from sae_lab.cli import main

main()
