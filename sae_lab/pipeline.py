"""The steps after a harvest, as functions with typed results, shared by `sae-lab demo`, the
Kaggle runner and the notebook:

    run_or_resume(sweep, out)  -> SweepResult   (sae_lab.sweep.run: reuse, resume or start;
                                                 sweep_quietly: the same on a quiet Ray)
    evaluate_and_export(...)   -> arch -> held-out metrics; OUT/eval/<arch>/, OUT/exports/<arch>/
    browse(...)                -> OUT/browser/index.html of one SAE

plus `quiet_ray` (a private, quiet Ray instance) and `Stages` (numbered progress lines).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sae_lab.data.shards import read_manifest
from sae_lab.evaluate import UNFIRED_FRAC, evaluate_sae, save_report, shard_activations
from sae_lab.export import export_saelens
from sae_lab.lm.attach import load_sae_dir
from sae_lab.lm.load import is_causal
from sae_lab.reading.browser import feature_browser
from sae_lab.sweep.report import SweepResult


class Stages:
    """Prints `[n/total] what  (elapsed)` as each stage of a long run starts."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.start = total, 0, time.monotonic()

    def __call__(self, what: str) -> None:
        self.n += 1
        print(f"\n[{self.n}/{self.total}] {what}  ({self.elapsed()})", flush=True)

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 60}m{s % 60:02d}s"


def quiet_env(offline: bool) -> None:
    """Environment for a long run: no tokenizer-fork warnings, no Tune warning about frequent
    state snapshots (tiny trials checkpoint every few seconds) and, with everything local
    (offline=True), no waiting on the Hugging Face hub."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def print_outputs(outputs: dict[str, Path]) -> None:
    """`  name  path` lines, aligned."""
    width = max(map(len, outputs))
    for name, path in outputs.items():
        print(f"  {name:<{width}}  {path}")


def quiet_ray(num_cpus: int | None = None) -> None:
    """Start a Ray instance of our own (address="local": never attach to a cluster some other
    job left running on this machine, which may even run another Python), without the
    dashboard and without trial workers' logs on our console (each trial writes its own
    TensorBoard logs)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 num_cpus=num_cpus, logging_level=logging.ERROR)


def sweep_quietly(sweep: Any, out: str | Path) -> SweepResult:
    """run_or_resume on a private, quiet Ray instance (shut down afterwards if started here),
    with a line per trial event; prints the results table, best first."""
    import ray

    from sae_lab.sweep.run import run_or_resume

    started = not ray.is_initialized()
    quiet_ray()
    try:
        result, how = run_or_resume(sweep, out)
    finally:
        if started:
            ray.shutdown()
    if how == "reused":
        print(f"finished in an earlier run: {Path(out) / 'results.csv'}")
    print(result.table())
    return result


def val_shards(sweep: Any) -> int:
    """How many last shards the sweep's trials held out (its base.data.val_shards)."""
    return int(sweep.base.get("data", {}).get("val_shards", 1))


def best_dirs(result: SweepResult) -> dict[str, Path]:
    """Architecture -> best/<arch>/ of the sweep, for each architecture that has one."""
    best = Path(result.out) / "best"
    archs = sorted({t.architecture for t in result.trials})
    return {a: best / a for a in archs if result.best(a) is not None and (best / a).is_dir()}


def evaluate_and_export(saes: dict[str, Path], shards: str | Path, out: str | Path,
                        last_shards: int = 1) -> dict[str, dict[str, float]]:
    """For each name -> SAE directory: held-out metrics on the last `last_shards` shards
    (OUT/eval/<name>/eval.json, density histogram) and a SAELens export carrying that density
    (OUT/exports/<name>/). Returns name -> metrics."""
    out, shards = Path(out), str(shards)
    names = [s["name"] for s in read_manifest(shards)["shards"]][-last_shards:]
    results = {}
    for name, d in saes.items():
        sae = load_sae_dir(d)
        res = evaluate_sae(sae, shard_activations(shards, shards=names))
        save_report(out / "eval" / name, {**res.metrics, "sae_dir": str(d), "shards": shards,
                                          "last_shards": last_shards}, res.density)
        export_saelens(sae, out / "exports" / name, res.density)
        results[name] = res.metrics
    return results


def heldout_table(metrics: dict[str, dict[str, float]]) -> str:
    """The best SAEs on the held-out rows. Its "unfired" column is not the sweep table's "dead"
    (training: none of the last sae.dead_tokens tokens), so a line under it says which it is."""
    head = f"{'best of':<10} {'L0':>8} {'FVU':>7} {'cos':>6} {'unfired':>7} {'tokens':>7}"
    lines = [head, "-" * len(head)]
    for arch, m in metrics.items():
        lines.append(f"{arch:<10} {m['l0']:>8.1f} {m['fvu']:>7.4f} {m['cos']:>6.3f} "
                     f"{m[UNFIRED_FRAC]:>7.1%} {m['tokens']:>7.0f}")
    lines.append("unfired: latents that fired on no held-out token (the sweep's dead: on none "
                 "of the last sae.dead_tokens training tokens)")
    return "\n".join(lines)


def browse(sae_dir: str | Path, shards: str | Path, out: str | Path, model: str,
           max_latents: int = 256, device: str = "auto") -> Path:
    """The feature browser of one SAE (`sae-lab inspect`); an encoder model (no unembedding)
    gets no promoted-token view. Returns OUT/index.html."""
    from transformers import AutoConfig

    causal = is_causal(AutoConfig.from_pretrained(model))
    return feature_browser(sae_dir, shards, out, max_latents=max_latents,
                           top_logits=None if causal else 0, device=device)
