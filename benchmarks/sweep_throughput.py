"""Packed against unpacked sweeps, through the real `run_sweep` on one local Ray.

    python benchmarks/sweep_throughput.py            # both shapes and the ASHA comparison
    python benchmarks/sweep_throughput.py --quick    # demo shapes only, one round
    python benchmarks/sweep_throughput.py --only asha   # (or demo, wide) one part

Table 1: the same sweep of 12 configs over three architectures (relu: 4 lambdas, topk and
batchtopk: 4 k each), with no early stopping, run unpacked (a Tune trial per SAE) and packed
(`pack: auto`: one pack per trial slot), the two taking turns for `--rounds` rounds; wall time
of the whole `run_sweep` (Ray trial start-up, data, training, reports), SAE-tokens trained per
second (the sum over all SAEs of the tokens each trained on) and the packed/unpacked ratio of
the median rounds. At the demo's shapes (d_in 64, d_sae 256, batch 1024) and at d_in 384,
d_sae 6144 (batch 4096, fewer steps).

Table 2: packed ASHA (demo shapes, 24 configs, early stopping per member across packs) against
the full grid run to the end: the best objective each found, and the SAE-tokens ASHA spent as a
fraction of the grid's. The grid is the packed no-early-stopping sweep of the same configs.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

DEMO = {"d": 64, "expansion": 4, "batch": 1024, "tokens": 200_000, "n_tokens": 300_000}
WIDE = {"d": 384, "expansion": 16, "batch": 4096, "tokens": 4096 * 16, "n_tokens": 4096 * 20}


def sweep_dict(shape: dict, per_arch: int, pack: int | str, asha: bool) -> dict:
    """relu / topk / batchtopk, `per_arch` configs each (a grid), at `shape`."""
    lambdas = [2.0 * 1.5**i for i in range(per_arch)]
    ks = [4 + 4 * i for i in range(per_arch)]
    max_tokens = shape["tokens"]
    steps = max_tokens // shape["batch"]
    return {
        "name": "bench",
        "base": {
            "data": {"synthetic": {"d": shape["d"], "n_features": 8 * shape["d"], "active": 6,
                                   "freq_exponent": 0.5, "n_tokens": shape["n_tokens"],
                                   "noise_std": 0.02}},
            "batch_size": shape["batch"], "max_tokens": max_tokens,
            "lr": 1e-3, "lr_warmup_steps": max(1, steps // 10),
            "val_every_steps": max(1, steps // 8), "log_every_steps": 10,
            "sae": {"expansion_factor": shape["expansion"], "dead_tokens": 100_000},
        },
        "architectures": ["relu", "topk", "batchtopk"],
        "space": {"relu": {"sparsity_coef": {"grid": lambdas}},
                  "topk": {"k": {"grid": ks}}, "batchtopk": {"k": {"grid": ks}}},
        "search": "grid",
        "scheduler": ({"type": "asha", "grace_tokens": max_tokens // 16, "reduction_factor": 4}
                      if asha else "none"),
        "resources": {"cpus": 1},
        "pack": pack,
        "max_failures": 0,
    }


def run(d: dict, root: Path) -> tuple[float, float, list[dict]]:
    """(wall seconds, SAE-tokens, rows of results.csv) of one sweep."""
    from sae_lab.sweep.run import run_sweep
    from sae_lab.sweep.schema import sweep_from_dict

    out = Path(tempfile.mkdtemp(dir=root))
    start = time.perf_counter()
    run_sweep(sweep_from_dict(d), out, verbose=0)
    wall = time.perf_counter() - start
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    bad = [r["trial"] for r in rows if r["status"] not in ("done", "stopped_early")]
    if bad:
        raise RuntimeError(f"trials did not finish: {bad}")
    return wall, sum(float(r["tokens"]) for r in rows), rows


def throughput(name: str, shape: dict, rounds: int, root: Path) -> None:
    walls: dict[str, list[float]] = {"unpacked": [], "packed": []}
    tokens = {}
    for _ in range(rounds):  # interleaved: the machine's load changes over minutes
        for mode, pack in (("packed", "auto"), ("unpacked", 1)):
            wall, sae_tokens, _ = run(sweep_dict(shape, 4, pack, asha=False), root)
            walls[mode].append(wall)
            tokens[mode] = sae_tokens
            print(f"  {name} {mode}: {wall:.1f} s", flush=True)
    med = {m: statistics.median(w) for m, w in walls.items()}
    for mode in walls:
        print(f"| {name} | {mode} | {med[mode]:.1f} s | {tokens[mode] / med[mode]:,.0f} |")
    print(f"| {name} | packed / unpacked | {med['unpacked'] / med['packed']:.2f}x | |",
          flush=True)


def asha_vs_grid(root: Path) -> None:
    _, grid_tokens, grid = run(sweep_dict(DEMO, 8, "auto", asha=False), root)
    _, asha_tokens, asha = run(sweep_dict(DEMO, 8, "auto", asha=True), root)
    best = {name: min(float(r["objective"]) for r in rows)
            for name, rows in (("grid", grid), ("asha", asha))}
    stopped = sum(r["status"] == "stopped_early" for r in asha)
    print(f"| full grid, 24 configs | best objective {best['grid']:.4f} | "
          f"{grid_tokens:,.0f} SAE-tokens | |")
    print(f"| packed ASHA ({stopped} stopped) | best objective {best['asha']:.4f} "
          f"({100 * (best['asha'] / best['grid'] - 1):+.2f}%) | {asha_tokens:,.0f} SAE-tokens | "
          f"{100 * asha_tokens / grid_tokens:.1f}% of the grid |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo shapes only, one round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per shape")
    parser.add_argument("--only", choices=("demo", "wide", "asha"), help="run one part")
    args = parser.parse_args()
    parts = {args.only} if args.only else {"demo"} if args.quick else {"demo", "wide", "asha"}
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    print("| shape | sweep | wall (median) | SAE-tokens/s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as tmp:
        root = Path(tmp)
        if "demo" in parts:
            throughput("demo: d_in 64, d_sae 256", DEMO, 1 if args.quick else args.rounds, root)
        if "wide" in parts:
            throughput("d_in 384, d_sae 6144", WIDE, 1, root)
        if "asha" in parts:
            print("\n| ASHA vs grid | best | SAE-tokens | |\n|---|---|---|---|")
            asha_vs_grid(root)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    ray.shutdown()


if __name__ == "__main__":
    main()
