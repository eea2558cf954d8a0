"""`sae-lab bench`: several SAEs, several tasks, one table and one figure.

    run_bench(saes, cfg, out) -> BenchResult
        each SAE gets a row; each task of TASKS adds its columns to it. A task that cannot run
        for an SAE (no LM head for CE, a labelled set with one class, no endpoint) adds one line
        to `notes` instead, and the other tasks still run.
    OUT/bench.json          every row (metrics and each task's details), the notes, the config
    OUT/bench.md            the table and the notes
    OUT/bench.png           one panel per metric against L0, one colour per architecture
    OUT/density.png         every SAE's feature-density histogram (core)

The model, the shard rows, the labelled sets' activations and the letter probe are computed
once and shared by every SAE that reads the same ones.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import Field

from sae_lab.config import config, to_dict
from sae_lab.files import atomic_file, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor, nn

    from sae_lab.bench.absorption import LetterProbe
    from sae_lab.bench.probing import Task
    from sae_lab.sae.base import SAE

TASK_NAMES = ("core", "sparse_probing", "absorption", "autointerp")
DEFAULT_TASKS = ("core", "sparse_probing", "absorption")
BENCH_JSON, BENCH_MD, BENCH_PNG = "bench.json", "bench.md", "bench.png"
DENSITY_PNG = "density.png"


@config
class BenchConfig:
    tasks: list[Literal["core", "sparse_probing", "absorption", "autointerp"]] = field(
        default_factory=lambda: list(DEFAULT_TASKS))
    """Tasks to run on every SAE, in order."""
    shards: str | None = None
    """Activation shards (held-out rows, with token ids) for core, absorption and autointerp."""
    last_shards: Annotated[int, Field(ge=1)] | None = None
    """Read the manifest's last N shards only: what training held out with
    data.val_shards=N (default: every shard)."""
    max_tokens: Annotated[int, Field(ge=1)] = 20_000
    """Shard rows read (the first ones): core's whole set and absorption's word tokens."""
    dataset: str | None = None
    """Text for CE/KL (.txt/.jsonl/.parquet file or Hub dataset id); default: the dataset the
    shards were harvested from."""
    n_seqs: Annotated[int, Field(ge=1)] = 16
    """Sequences scored for CE/KL."""
    ctx_len: Annotated[int, Field(ge=2)] | None = None
    """Tokens per CE/KL sequence; default: the SAE's ctx_len (or 128)."""
    probe_sets: list[str] = field(default_factory=lambda: ["stdlib_topics", "prose_or_code"])
    """Labelled sets for sparse_probing: built-in names, .jsonl files (text, label) or dataset
    names for datasets.load_dataset (text and label columns)."""
    probe_texts: Annotated[int, Field(ge=4)] = 60
    """Texts per class of each labelled set, at most."""
    ks: list[Annotated[int, Field(ge=1)]] = field(default_factory=lambda: [1, 2, 5, 20])
    """Sizes of the k-sparse probes."""
    absorption_min_tokens: Annotated[int, Field(ge=1)] = 10
    """A first letter is scored when it has at least this many held-out word tokens."""
    endpoint: str | None = None
    """OpenAI-compatible chat endpoint for autointerp (e.g. http://localhost:11434/v1)."""
    llm: str = "llama3.1"
    """The model autointerp asks at the endpoint."""
    autointerp_latents: Annotated[int, Field(ge=1)] = 20
    """Latents autointerp samples per SAE."""
    llm_retries: Annotated[int, Field(ge=0)] = 3
    """Retries of a failed request to the endpoint, with exponential backoff from 1 s (0: an
    endpoint that is down costs one note at once)."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:1, ..."""
    seed: int = 0
    """Seed of every split and sample."""


def metric_names(cfg: BenchConfig) -> list[str]:
    """Every metric the tasks of `cfg` can add to a row (bench.json, a sweep's bench_<name>)."""
    from sae_lab.bench.core import LOSS_KEYS, RECON_KEYS

    probes = [f"probe_{w}_{k}" for w in ("sae", "llm")
              for k in (*(f"top{k}" for k in cfg.ks), "all")]
    by_task = {
        "core": [*RECON_KEYS, "dense_frac", "rows", *LOSS_KEYS],
        "sparse_probing": probes,
        "absorption": ["absorption_full", "absorption_fraction", "absorption_split_latents"],
        "autointerp": ["autointerp"],
    }
    return [m for t in cfg.tasks for m in by_task[t]]


class BenchSAE(NamedTuple):
    label: str
    """Its name in the table."""
    directory: str
    """A local sae_lab SAE directory."""


@dataclass
class Row:
    label: str
    directory: str
    architecture: str
    d_sae: int
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchResult:
    rows: list[Row]
    notes: list[str]
    densities: dict[str, Any] = field(default_factory=dict)
    """label -> [d_sae] firing frequency of each latent (core)"""


class TaskOut(NamedTuple):
    metrics: dict[str, float]
    details: dict[str, Any]
    notes: Sequence[str] = ()


class Bench:
    """What the tasks share across SAEs: the rows, models, text activations, the letter probe."""

    def __init__(self, cfg: BenchConfig, out: Path) -> None:
        from sae_lab.lm.load import resolve_device

        self.cfg = cfg
        self.out = out
        self.device = resolve_device(cfg.device)
        self.densities: dict[str, Tensor] = {}
        self._cache: dict[Any, Any] = {}

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        """make(), computed the first time `key` is asked for."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def manifest(self) -> dict[str, Any]:
        from sae_lab.data.shards import read_manifest

        if not self.cfg.shards:
            raise ValueError("needs activation shards (--shards)")
        return self.once("manifest", lambda: read_manifest(self.cfg.shards))

    def rows(self) -> tuple[Tensor, np.ndarray]:
        """(acts [N, d_in], token ids [N]) of the first max_tokens shard rows."""
        return self.once("rows", self._read_rows)

    def _read_rows(self) -> tuple[Tensor, np.ndarray]:
        import torch

        from sae_lab.data.shards import iter_blocks

        names = [e["name"] for e in self.manifest()["shards"]]
        if self.cfg.last_shards:
            if self.cfg.last_shards > len(names):
                raise ValueError(f"last_shards={self.cfg.last_shards}: shards {self.cfg.shards} "
                                 f"hold only {len(names)} shard(s)")
            names = names[-self.cfg.last_shards:]
        acts, ids, n = [], [], 0
        for block in iter_blocks(self.cfg.shards, names):
            take = self.cfg.max_tokens - n
            acts.append(block["acts"][:take].float())
            ids.append(block["token_ids"][:take])
            n += len(acts[-1])
            if n >= self.cfg.max_tokens:
                break
        if not n:
            raise ValueError(f"shards {self.cfg.shards}: no rows")
        x = torch.cat(acts)
        bad = int((~torch.isfinite(x).all(dim=1)).sum())
        if bad:
            raise ValueError(f"shards {self.cfg.shards}: {bad} of the {n} rows read hold NaN or "
                             "Inf")
        return x, torch.cat(ids).numpy()

    def lm(self, name: str) -> tuple[nn.Module, Any]:
        from sae_lab.lm.load import load_lm

        return self.once(("lm", name), lambda: load_lm(name, self.device))

    def tokenizer(self, sae: SAE) -> Any:
        from sae_lab.lm.load import load_tokenizer

        m = self.manifest()
        name = m.get("tokenizer") or m.get("model") or sae.metadata.get("model")
        if not name:
            raise ValueError("neither the shards nor the SAE name a tokenizer")
        return self.once(("tok", name), lambda: load_tokenizer(name))


def _check_shards(bench: Bench, sae: SAE) -> list[str]:
    from sae_lab.lm.attach import check_shards

    return check_shards(sae, bench.manifest(), str(bench.cfg.shards))


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "sae"


# --- the tasks ---------------------------------------------------------------------------------


def task_core(bench: Bench, sae: SAE, entry: BenchSAE) -> TaskOut:
    from sae_lab.bench.core import reconstruction

    notes = _check_shards(bench, sae)
    acts, _ = bench.rows()
    metrics, bench.densities[entry.label] = reconstruction(sae, acts.split(4096))
    details: dict[str, Any] = {}
    try:  # the loss is a part of core that may not apply: a note, the rest stays
        metrics.update(_loss(bench, sae, details))
    except (ValueError, OSError) as e:
        notes.append(f"CE/KL skipped: {_one_line(e)}")
    return TaskOut(metrics, details, notes)


def _loss(bench: Bench, sae: SAE, details: dict[str, Any]) -> dict[str, float]:
    from sae_lab.bench.core import downstream
    from sae_lab.evaluate import dataset_batches
    from sae_lab.lm.attach import hook_point, model_name
    from sae_lab.lm.load import is_causal

    name = model_name(sae, None)
    model, tokenizer = bench.lm(name)
    if not is_causal(model.config):
        raise ValueError(f"model {name} has no LM head (not a causal LM)")
    dataset, split = bench.cfg.dataset, "train"
    if not dataset:
        d = bench.manifest().get("dataset") or {}
        dataset, split = d.get("path"), d.get("split") or "train"
    if not dataset:
        raise ValueError("the shards name no dataset; pass --dataset")
    layer, hook = hook_point(sae)
    ctx_len = bench.cfg.ctx_len or sae.metadata.get("ctx_len") or 128
    seqs = bench.once(("seqs", name, dataset, ctx_len), lambda: dataset_batches(
        dataset, tokenizer, ctx_len, bench.cfg.n_seqs, 8, split=split))
    details["ce_dataset"] = dataset
    return downstream(sae, model, seqs, layer, hook)


def task_sparse_probing(bench: Bench, sae: SAE, entry: BenchSAE) -> TaskOut:
    from sae_lab.bench.probing import mean_over_sets, pool_latents, probe_accuracies
    from sae_lab.lm.attach import hook_point, model_name

    name = model_name(sae, None)
    layer, hook = hook_point(sae)
    per_set: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for spec in bench.cfg.probe_sets:
        try:
            acts, tasks, llm = _probe_set(bench, spec, name, layer, hook)
        except (ValueError, OSError) as e:
            notes.append(str(e))
            continue
        if acts[0].shape[-1] != sae.d_in:
            raise ValueError(f"SAE d_in={sae.d_in} does not match layer {layer} {hook} width "
                             f"{acts[0].shape[-1]}")
        z = pool_latents(sae, acts)
        sae_acc = probe_accuracies(z, tasks, "sae", tuple(bench.cfg.ks), seed=bench.cfg.seed)
        per_set[spec] = {**sae_acc, **llm}
    if not per_set:
        raise ValueError("; ".join(notes) or "no labelled set")
    return TaskOut(mean_over_sets(per_set), {"sets": per_set}, notes)


def _probe_set(bench: Bench, spec: str, model: str, layer: int, hook: str
               ) -> tuple[list[Tensor], list[Task], dict[str, float]]:
    """(token activations per text, binary tasks, raw-activation accuracies) of one set."""
    from sae_lab.bench.probing import binary_tasks, pool_raw, probe_accuracies, token_activations
    from sae_lab.bench.textsets import load_text_set

    cfg = bench.cfg

    def make() -> tuple[list[Tensor], list[Task], dict[str, float]]:
        ts = bench.once(("set", spec), lambda: load_text_set(spec, cfg.probe_texts, cfg.seed))
        lm, tokenizer = bench.lm(model)
        acts = token_activations(lm, tokenizer, ts.texts, layer, hook)
        tasks = binary_tasks(ts.labels, seed=cfg.seed)
        llm = probe_accuracies(pool_raw(acts), tasks, "llm", tuple(cfg.ks), dense=True,
                               seed=cfg.seed)
        return acts, tasks, llm

    return bench.once(("probe", spec, model, layer, hook), make)


def task_absorption(bench: Bench, sae: SAE, entry: BenchSAE) -> TaskOut:
    from sae_lab.bench.absorption import (
        AbsorptionParams,
        absorption,
        cap_per_token,
        fit_letter_probe,
        word_letters,
    )

    notes = _check_shards(bench, sae)
    acts, ids = bench.rows()
    params = AbsorptionParams(min_tokens=bench.cfg.absorption_min_tokens)

    def make() -> tuple[Tensor, LetterProbe]:
        letters = word_letters(ids, bench.tokenizer(sae))
        keep = cap_per_token(ids, letters != "", params.per_token)
        x = acts[keep]
        return x, fit_letter_probe(x.numpy(), letters[keep], params, bench.cfg.seed)

    x, probe = bench.once("letter_probe", make)
    metrics, per_letter = absorption(sae, x, probe, params, bench.cfg.seed)
    return TaskOut(metrics, {"letters": per_letter, "word_tokens": len(x)}, notes)


def task_autointerp(bench: Bench, sae: SAE, entry: BenchSAE) -> TaskOut:
    from sae_lab.bench.autointerp import detection_score

    cfg = bench.cfg
    if cfg.endpoint:
        bench.manifest()
    out = bench.out / "autointerp" / f"{slug(entry.label)}.json"
    metrics, details = detection_score(entry.directory, str(cfg.shards), cfg.endpoint, cfg.llm,
                                       cfg.autointerp_latents, sae.d_sae, out, cfg.seed,
                                       device=bench.device, retries=cfg.llm_retries)
    return TaskOut(metrics, details)


TASKS: dict[str, Callable[[Bench, SAE, BenchSAE], TaskOut]] = {
    "core": task_core,
    "sparse_probing": task_sparse_probing,
    "absorption": task_absorption,
    "autointerp": task_autointerp,
}
"""Each task: (bench, SAE, entry) -> its metrics, details and notes. Raising ValueError or
OSError turns into one note; the other tasks still run."""


# --- running, the table, the plot ------------------------------------------------------------


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def run_bench(saes: list[BenchSAE], cfg: BenchConfig, out: str | Path,
              say: Callable[[str], None] = _stderr, earlier: Sequence[Row] = ()
              ) -> BenchResult:
    """Every task of `cfg` on every SAE; writes OUT/bench.json, bench.md, bench.png (and
    density.png), with the `earlier` rows (of an earlier run, kept as they are) first."""
    from sae_lab.lm.attach import load_sae_dir

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(cfg, out)
    rows, notes = list(earlier), []

    def note(line: str) -> None:
        if line not in notes:
            notes.append(line)
            say(line)

    for entry in saes:
        sae = load_sae_dir(entry.directory, bench.device)
        row = Row(entry.label, entry.directory, sae.cfg.architecture, sae.d_sae)
        for task in cfg.tasks:
            try:
                got = TASKS[task](bench, sae, entry)
            except (ValueError, OSError, KeyError) as e:
                note(f"{task}: {_one_line(e)}")
                continue
            row.metrics.update(got.metrics)
            row.details[task] = got.details
            for line in got.notes:
                note(f"{task}: {line}")
        rows.append(row)
        say(f"{entry.label}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.metrics.items()))
    result = BenchResult(rows, notes, bench.densities)
    write(result, cfg, out)
    return result


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(msg).splitlines()[0] if str(msg) else type(e).__name__


def columns(rows: list[Row]) -> list[str]:
    """The metric columns present in any row, in the order the tasks add them."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(r.metrics))
    return list(seen)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.0f}" if isinstance(v, float) and v >= 1000 else f"{v:.4g}"


def markdown(result: BenchResult) -> str:
    cols = columns(result.rows)
    head = ["sae", "architecture", "d_sae", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result.rows:
        cells = [r.label, r.architecture, str(r.d_sae),
                 *[_fmt(r.metrics.get(c)) for c in cols]]
        lines.append("| " + " | ".join(cells) + " |")
    if result.notes:
        lines += ["", "Notes:", "", *[f"- {n}" for n in result.notes]]
    return "\n".join(lines) + "\n"


PLOTTED = ("fvu", "cos", "unfired_frac", "dense_frac", "ce_score", "kl_score",
           *(f"probe_sae_top{k}" for k in (1, 2, 5, 20)), "absorption_full",
           "absorption_fraction", "autointerp")
"""The metrics bench.png shows, when present; bench.json and bench.md hold every one."""


def plot(result: BenchResult, path: Path) -> Path | None:
    """One panel per metric of PLOTTED against L0, SAEs of one architecture in one colour,
    joined in order of L0; a probe panel also shows the same probe on raw activations (dashed).
    None when no row has an L0 (core did not run)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in result.rows if math.isfinite(r.metrics.get("l0", math.nan))]
    metrics = [m for m in PLOTTED if any(m in r.metrics for r in rows)]
    if not rows or not metrics:
        return None
    ncol = min(4, len(metrics))
    nrow = -(-len(metrics) // ncol)
    fig = Figure(figsize=(3.3 * ncol, 2.6 * nrow))
    FigureCanvasAgg(fig)
    archs = sorted({r.architecture for r in rows})
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for j, a in enumerate(archs):
            pts = sorted((r.metrics["l0"], r.metrics[m]) for r in rows
                         if r.architecture == a and m in r.metrics)
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", color=f"C{j}", label=a, ms=4, lw=1)
        raw = m.replace("probe_sae_", "probe_llm_")
        if raw != m and any(raw in r.metrics for r in rows):
            ax.axhline(next(r.metrics[raw] for r in rows if raw in r.metrics), color="#555",
                       ls="--", lw=0.8, label="raw activations")
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.locator_params(nbins=4)  # fewer tick labels: most of the drawing time is text
        ax.grid(alpha=0.3)
        if i >= len(metrics) - ncol:
            ax.set_xlabel("L0", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    # fixed margins: tight_layout measures every label and costs seconds on a busy CPU
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12 / nrow + 0.04, top=0.96 - 0.04 / nrow,
                        wspace=0.3, hspace=0.45)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path


def plot_density(rows: list[Row], densities: dict[str, Any], path: Path) -> Path:
    """The feature-density histogram of every SAE on one panel: log10 firing frequency of its
    latents (step outlines), the latents that never fired counted in the legend."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bins = np.linspace(-6, 0, 49)
    for j, r in enumerate(rows):
        d = densities.get(r.label)
        if d is None:
            continue
        d = d.double().cpu().numpy()
        alive = d[d > 0]
        ax.hist(np.log10(alive), bins=bins, histtype="step", color=f"C{j % 10}",
                label=f"{r.label} ({int((d == 0).sum())} never fired)")
    ax.set_xlabel("log10 feature density (fraction of rows a latent fires on)", fontsize=8)
    ax.set_ylabel("latents", fontsize=8)
    ax.legend(fontsize=6)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14, top=0.97)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return path


def write(result: BenchResult, cfg: BenchConfig, out: Path) -> None:
    atomic_write_json(out / BENCH_JSON, {
        "config": to_dict(cfg),
        "rows": [r.__dict__ for r in result.rows],
        "notes": result.notes,
    })
    atomic_write_text(out / BENCH_MD, markdown(result))
    if plot(result, out / BENCH_PNG) is None:
        (out / BENCH_PNG).unlink(missing_ok=True)
    if result.densities:
        plot_density(result.rows, result.densities, out / DENSITY_PNG)
