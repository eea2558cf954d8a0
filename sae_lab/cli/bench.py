"""Score SAEs on what they are used for, beyond FVU and L0: core (whole-set FVU, cosine, L0, dead
and dense latents, feature density, CE loss recovered and KL for causal LMs), sparse_probing
(k-sparse probes on latents against raw activations, on labelled text), absorption (the
first-letter task) and autointerp (explain's detection score, with --endpoint). Takes SAE
directories, hf:// specs and sweep outputs (their best/ and frontier SAEs); writes
OUT/bench.json, OUT/bench.md and OUT/bench.png (one panel per metric against L0). A task that
cannot run for an SAE prints one line; the others still run.
"""

from __future__ import annotations

import argparse

from sae_lab.cli.args import add_config_arguments, checked, command, config_from_args


def _tasks(text: str) -> list[str]:
    from sae_lab.bench.run import TASK_NAMES

    tasks = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASK_NAMES]
    if bad or not tasks:
        named = ", ".join(bad) if bad else repr(text)
        raise ValueError(f"unknown task(s) {named}; choose from {', '.join(TASK_NAMES)}")
    return tasks


def _ks(text: str) -> list[int]:
    try:
        ks = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{text!r} is not a list of integers like 1,2,5,20") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"{text!r}: each k must be >= 1")
    return ks


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from sae_lab.bench.run import DEFAULT_TASKS, BenchConfig

    p = command(sub, "bench", __doc__)
    p.add_argument("sources", nargs="+", metavar="SAE_OR_SWEEP_DIR",
                   help="SAE directory, hf:// spec or sweep output directory")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--tasks", type=checked(_tasks), default=list(DEFAULT_TASKS),
                   help="comma-separated: core, sparse_probing, absorption, autointerp "
                   f"(default: {','.join(DEFAULT_TASKS)})")
    p.add_argument("--k", dest="ks", type=checked(_ks), default=None,
                   help="sizes of the k-sparse probes, comma-separated (default: 1,2,5,20)")
    add_config_arguments(p, BenchConfig, flags={"probe_sets": "--probe-set"},
                         skip=("tasks", "ks"))
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.bench.run import (
        BENCH_JSON,
        BENCH_MD,
        BENCH_PNG,
        BenchConfig,
        BenchSAE,
        markdown,
        run_bench,
    )
    from sae_lab.share.hub import resolve_sae_dir
    from sae_lab.share.sources import distinct, sources

    cfg = config_from_args(BenchConfig, args, "bench")
    saes = []
    for path in args.sources:
        for src in distinct(sources(path).saes):
            label = f"{path}:{src.name}" if src.name else path
            saes.append(BenchSAE(label, str(resolve_sae_dir(src.directory))))
    result = run_bench(saes, cfg, args.out)
    print(markdown(result), end="")
    out = args.out.rstrip("/")
    png = f", {out}/{BENCH_PNG}" if any("l0" in r.metrics for r in result.rows) else ""
    print(f"saved: {out}/{BENCH_JSON}, {out}/{BENCH_MD}{png}")
