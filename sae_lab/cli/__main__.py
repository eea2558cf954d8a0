"""`python -m sae_lab.cli ...`: the same as `sae-lab ...`."""

from sae_lab.cli import main

main()
