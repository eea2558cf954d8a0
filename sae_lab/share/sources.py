"""What a path on the command line names: one SAE, or the SAEs a sweep kept.

    SAE_DIR               one SAE (any layout layouts.py reads), its metrics from SAE_DIR/eval
    SWEEP_OUT             a sweep's output (results.csv, pareto.png, best/): each SAE in best/
    SWEEP_OUT/best        the same, from best/ itself
    hf://REPO[/PATH][@R]  one SAE on the Hub (hub.py)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from sae_lab.share.layouts import layout_of

SUMMARY = "summary.json"


class SAESource(NamedTuple):
    name: str
    """Its name in a repo / a table: "" for a lone SAE, best/'s folder name in a sweep."""
    directory: str
    """Local directory or hf:// spec."""
    metrics: dict[str, Any]
    """Held-out metrics already known (eval/eval.json, best/summary.json); may be empty."""


class Sources(NamedTuple):
    saes: list[SAESource]
    pareto: Path | None
    """The sweep's pareto.png, when the path is a sweep."""
    is_sweep: bool


def sources(path: str) -> Sources:
    """The SAEs `path` names; a one-line error when it names none."""
    if path.startswith("hf://"):
        return Sources([SAESource("", path, {})], None, False)
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such directory")
    if layout_of(p):
        return Sources([SAESource("", str(p), _eval_metrics(p))], None, False)
    best = p / "best" if (p / "best").is_dir() else p
    if not (best / SUMMARY).is_file():
        raise ValueError(f"{p}: neither an SAE directory nor a sweep output (results.csv, best/)")
    summary = json.loads((best / SUMMARY).read_text())
    saes = [SAESource(name, str(best / name), dict(row)) for name, row in summary.items()
            if layout_of(best / name)]
    if not saes:
        raise ValueError(f"{best}: no SAE directories")
    pareto = best.parent / "pareto.png"
    return Sources(saes, pareto if pareto.is_file() else None, True)


def distinct(saes: list[SAESource]) -> list[SAESource]:
    """Each SAE once: a sweep's frontier SAE that is also an architecture's best (the same trial)
    is kept under both names, e.g. "topk=frontier_1", so a table does not score it twice."""
    out: list[SAESource] = []
    seen: dict[str, int] = {}
    for src in saes:
        trial = src.metrics.get("trial")
        if trial is not None and trial in seen:
            i = seen[trial]
            out[i] = out[i]._replace(name=f"{out[i].name}={src.name}")
            continue
        if trial is not None:
            seen[trial] = len(out)
        out.append(src)
    return out


def _eval_metrics(sae_dir: Path) -> dict[str, Any]:
    path = sae_dir / "eval" / "eval.json"
    try:
        return dict(json.loads(path.read_text())) if path.is_file() else {}
    except ValueError:
        return {}


def training_config(sae_dir: str) -> str | None:
    """The YAML config of the run an SAE directory came from, when there: its run dir's
    config.yaml (train), or the sweep's sweep.yaml (best/<name>), one or two levels up."""
    p = Path(sae_dir)
    for parent in (p.parent, p.parent.parent):
        for name in ("config.yaml", "sweep.yaml"):
            if (parent / name).is_file():
                return (parent / name).read_text()
    return None
