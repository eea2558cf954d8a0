"""Sweeps: a YAML of architectures and search spaces -> Ray Tune trials -> a SweepResult, Pareto
frontier and best checkpoints. space.py (validate, Tune space), run.py (Tuner, run_or_resume),
report.py (SweepResult, results.csv, pareto.png, best/), progress.py (a line per trial event)."""
