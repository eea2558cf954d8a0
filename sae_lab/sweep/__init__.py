"""Sweeps: a YAML of architectures and search spaces -> Ray Tune trials -> results, Pareto
frontier and best checkpoints. space.py (validate, Tune space), run.py (Tuner), report.py."""
