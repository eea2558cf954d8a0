"""Sharing: SAEs to and from the Hugging Face Hub, other libraries' layouts, comparisons.

layouts.py (SAELens / sparsify folders -> sae_lab SAEs), hub.py (hf:// specs -> SAE directories,
through the Hub cache), card.py (the model card of a push), push.py (upload), compare.py (SAEs
from anywhere on one Pareto plot, evaluated on the same rows).
"""
