"""Sweeps: a YAML of architectures and search spaces -> Ray Tune trials -> a SweepResult, Pareto
frontier and best checkpoints. schema.py (the YAML: parse, validate), space.py (the Tune and Optuna
spaces), run.py (Tuner, run_or_resume), packs.py (several SAEs per trial), scheduler.py (ASHA per
architecture), report.py (SweepResult, results.csv, pareto.png, best/), progress.py (a line per
trial event)."""
