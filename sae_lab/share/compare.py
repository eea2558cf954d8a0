"""SAEs from sweeps, folders and the Hub on one Pareto plot and one table, every one evaluated
(evaluate.py) on the same held-out rows: the first `max_tokens` rows of one shard set, read once
and kept in memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from sae_lab.evaluate import evaluate_sae, shard_activations
from sae_lab.files import atomic_file
from sae_lab.lm.attach import load_sae_dir
from sae_lab.share.hub import resolve_sae_dir
from sae_lab.share.sources import distinct, sources
from sae_lab.sweep.report import lower_left

COLUMNS = ("l0", "fvu", "cos", "dead_frac", "tokens")


class Row(NamedTuple):
    label: str
    architecture: str
    d_sae: int
    metrics: dict[str, float]


def compare(paths: list[str], shards: str, max_tokens: int = 20_000,
            batch_size: int = 4096) -> list[Row]:
    """One row per SAE named by `paths` (sweep outputs, SAE directories, hf:// specs)."""
    rows_x = list(shard_activations(shards, batch_size=batch_size, max_tokens=max_tokens))
    if not rows_x:
        raise ValueError(f"{shards}: no activations")
    d_in = rows_x[0].shape[1]
    rows = []
    for path in paths:
        for src in distinct(sources(path).saes):
            sae = load_sae_dir(resolve_sae_dir(src.directory))
            if sae.d_in != d_in:
                raise ValueError(f"{src.directory}: d_in={sae.d_in}, shards {shards} have "
                                 f"d_in={d_in}")
            with torch.no_grad():
                metrics = evaluate_sae(sae, rows_x).metrics
            label = f"{path}:{src.name}" if src.name else path
            rows.append(Row(label, sae.name, sae.d_sae, metrics))
    return rows


def frontier(rows: list[Row]) -> list[int]:
    """Indices of the rows no other row beats on both L0 and FVU, by L0."""
    return lower_left({i: (r.metrics["l0"], r.metrics["fvu"]) for i, r in enumerate(rows)})


def table(rows: list[Row]) -> str:
    on = set(frontier(rows))
    head = ["sae", "architecture", "d_sae", *COLUMNS, "frontier"]
    cells = [[r.label, r.architecture, str(r.d_sae),
              *[_fmt(k, r.metrics.get(k)) for k in COLUMNS], "*" if i in on else ""]
             for i, r in enumerate(rows)]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(head)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *cells])


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.0f}" if key == "tokens" else f"{v:.4g}"


def plot(rows: list[Row], path: str | os.PathLike) -> Path:
    """L0 against FVU, one point per SAE (labelled), the frontier drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        ax.scatter(r.metrics["l0"], r.metrics["fvu"], s=36)
        ax.annotate(r.label, (r.metrics["l0"], r.metrics["fvu"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = [rows[i] for i in frontier(rows)]
    ax.plot([r.metrics["l0"] for r in front], [r.metrics["fvu"] for r in front], color="black",
            lw=1, label="Pareto frontier")
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel("FVU (fraction of variance unexplained)")
    tokens = int(rows[0].metrics["tokens"])
    ax.set_title(f"{len(rows)} SAEs on the same {tokens} held-out rows")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
