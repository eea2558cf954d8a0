"""sae_lab on Kaggle's "GPU T4 x2": harvest a Hub model, sweep SAEs on both GPUs, export the best.

    install sae_lab -> harvest MODEL (layer L) over a Hub DATASET into shards on local disk
      -> sweeps/kaggle_t4x2.yaml with Ray Tune, one pack of SAEs per GPU (2 packs at once)
      -> /kaggle/working/sweep/{results.csv, pareto.png, best/}, /kaggle/working/exports/<arch>/
         (SAELens), /kaggle/working/eval/<arch>/, /kaggle/working/browser/index.html
    --live: no harvest and no shards; every pack runs the model itself (data.live: by default
      the sweep's, Llama-3.2-3B layer 16), for layers whose shards would not fit the disk;
      exports only (metrics: the trials' own)
    --push REPO_ID (or PUSH_REPO below): when the sweep has finished, its best/ SAEs, pareto.png
      and a model card go to that Hugging Face Hub model repo (`sae-lab push`), with the token
      from the notebook's HF_TOKEN secret (Add-ons -> Secrets) or the HF_TOKEN variable

Time budget: Kaggle ends GPU sessions after 12 hours. At --budget-hours (default 11) minus
--reserve-minutes the sweep is stopped like Ctrl-C (Tune saves its state), and the best
checkpoints so far are evaluated and exported. Running again continues: the harvest restarts
after its last complete shard and the sweep resumes without re-running finished trials. In a new
Kaggle session, attach this notebook's previous output as an input (Add data -> Your Work); its
sweep/ folder is copied back into /kaggle/working first.

    push:       kaggle kernels push -p kaggle/          (edit "id" in kernel-metadata.json)
    fetch:      kaggle kernels output USER/sae-lab-t4x2 -p runs/kaggle
    smoke test: python kaggle/sae_lab_kaggle.py --smoke --out /tmp/kaggle_smoke
                (CPU, a tiny random GPT-2 built from config, a local text file, about a minute)

This file is all Kaggle receives: it installs sae_lab itself, from the git URL in REPO below.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = os.environ.get("SAE_LAB_REPO", "")
"""Git URL of the sae_lab to install on Kaggle: set it here before `kaggle kernels push` (a
Kaggle script gets no command-line flags), or pass --repo / set SAE_LAB_REPO elsewhere."""
PUSH_REPO = os.environ.get("SAE_LAB_PUSH_REPO", "")
"""Hub model repo (OWNER/NAME) the results are pushed to when the sweep has finished; empty: no
push. Set it here before `kaggle kernels push`, or pass --push / set SAE_LAB_PUSH_REPO elsewhere."""
KAGGLE_WORKING = Path("/kaggle/working")
ON_KAGGLE = KAGGLE_WORKING.is_dir() and bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))
SWEEP = "kaggle_t4x2.yaml"
MODEL = "Qwen/Qwen2.5-0.5B"
DATASET = "HuggingFaceFW/fineweb-edu"
DATASET_NAME = "sample-10BT"
SMOKE_SWEEP = [
    "resources.gpus=0", "resources.cpus=1", "max_concurrent=2", "num_samples=1",
    "base.device=cpu", "base.batch_size=512", "base.max_tokens=4096", "base.val_every_steps=4",
    "base.val_batches=2", "base.lr_warmup_steps=1", "base.sparsity_warmup_steps=0",
    "base.sae.expansion_factor=2", "scheduler.grace_tokens=2048",
    "space.topk.k={grid: [8]}", "space.batchtopk.k={grid: [8]}",
]
"""--smoke: the same sweep on CPU, three trials of eight steps (tests the path, not a result)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help=f"Hub model id or local path, e.g. gpt2 (default: {MODEL}; "
                   "with --live, the sweep's data.live.model)")
    p.add_argument("--dataset", help="Hub dataset id, or a local .txt/.jsonl/.parquet file "
                   f"(default: {DATASET}; with --smoke: the standard library's docstrings)")
    p.add_argument("--dataset-name", help="Hub dataset configuration (default: "
                   f"{DATASET_NAME} for {DATASET}, else none)")
    p.add_argument("--split", default="train", help="Hub dataset split")
    p.add_argument("--text-column", default="text", help="column holding the text")
    p.add_argument("--layer", type=int, default=-1, help="layer to harvest; -1: the middle one "
                   "(with --live and the sweep's model: its data.live.layers)")
    p.add_argument("--tokens", type=int, default=8_000_000, help="tokens to harvest")
    p.add_argument("--ctx-len", type=int, help="tokens per window (default: 256; with --live, "
                   "the sweep's data.live.ctx_len)")
    p.add_argument("--harvest-batch-size", type=int, help="windows per forward (default: 32; "
                   "with --live, the sweep's data.live.batch_size)")
    p.add_argument("--model-dtype", choices=["float32", "float16", "bfloat16"],
                   help="dtype the model runs in (T4s have no fast bfloat16; default: float32; "
                   "with --live, the sweep's data.live.model_dtype)")
    p.add_argument("--shard-rows", type=int, default=65_536, help="rows per shard")
    p.add_argument("--sweep", default=SWEEP, help="sweep YAML: a path or a name in sweeps/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep field (repeatable)")
    p.add_argument("--out", default=str(KAGGLE_WORKING) if ON_KAGGLE else "runs/kaggle",
                   help="results and exports (kept by Kaggle as the notebook's output)")
    p.add_argument("--shards-dir", default="/tmp/sae_lab_shards" if ON_KAGGLE else None,
                   help="activation shards: scratch disk, not the 20 GB output (default on "
                   "Kaggle: /tmp/sae_lab_shards; elsewhere OUT/shards)")
    p.add_argument("--budget-hours", type=float, default=11.0,
                   help="wall-clock budget of this run, under Kaggle's 12 h session limit")
    p.add_argument("--reserve-minutes", type=float, default=20.0,
                   help="stop the sweep this long before the budget ends, to export")
    p.add_argument("--browser-latents", type=int, default=256,
                   help="latents in the feature browser")
    p.add_argument("--push", default=PUSH_REPO, metavar="REPO_ID", help="when the sweep has "
                   "finished, push best/ with a model card to this Hub model repo (needs the "
                   "HF_TOKEN secret or variable; empty: no push)")
    p.add_argument("--push-private", action="store_true", help="create the --push repo private")
    p.add_argument("--repo", default=REPO, help="git URL to install sae_lab from")
    p.add_argument("--ref", default="main", help="branch or tag of --repo")
    p.add_argument("--pip-spec", default="", help="install with `pip install PIP_SPEC` instead "
                   "of --repo (e.g. a wheel URL)")
    p.add_argument("--live", action="store_true", help="no shards: every trial runs the model "
                   "over the dataset itself (data.live), for layers whose shards would not fit "
                   "the disk; --tokens is then unused, and the held-out metrics are the trials' "
                   "own (no shard eval, no feature browser)")
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny random GPT-2 "
                   "built from config, a local text file, 8k tokens, three tiny trials")
    if argv is None and "ipykernel" in sys.modules:  # run as a notebook cell: no flags
        argv = []
    args = p.parse_args(argv)
    if not args.live:  # --live leaves unset ones to the sweep's data.live
        args.ctx_len = args.ctx_len or 256
        args.harvest_batch_size = args.harvest_batch_size or 32
        args.model_dtype = args.model_dtype or "float32"
    if args.smoke:
        args.tokens, args.shard_rows, args.ctx_len = min(args.tokens, 8192), 2048, 64
        args.overrides = [*SMOKE_SWEEP, *args.overrides]
    return args


# --- install -------------------------------------------------------------------------------------


def install(repo: str, ref: str, pip_spec: str = "") -> Path | None:
    """Make `import sae_lab` work; returns the checkout holding sweeps/ (None: use the installed
    package's). A checkout in place (this file inside the repository) is used as it is; on
    Kaggle the repository is cloned from `repo` (its sweeps/ come with it)."""
    here = _checkout()
    if (here / "sweeps").is_dir() and (here / "sae_lab").is_dir():
        if importlib.util.find_spec("sae_lab") is None:
            _pip(str(here))
        return here / "sweeps"
    if repo:
        src = Path("/tmp/sae_lab_src")
        if not (src / "pyproject.toml").is_file():
            subprocess.check_call(["git", "clone", "--depth", "1", "--branch", ref, repo,
                                   str(src)])
        _pip(str(src))
        return src / "sweeps"
    if pip_spec:
        _pip(pip_spec)
        return None
    if importlib.util.find_spec("sae_lab") is None:
        raise SystemExit("sae_lab is not installed and no source is given: set REPO at the top "
                         "of sae_lab_kaggle.py to the git URL of sae_lab (or pass --repo URL)")
    return None


def _checkout() -> Path:
    """The repository around this file (meaningless on Kaggle, where no checkout exists)."""
    return Path(globals().get("__file__", "sae_lab_kaggle.py")).resolve().parent.parent


def _pip(spec: str) -> None:
    print(f"pip install {spec}", flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", spec])


# --- time budget ---------------------------------------------------------------------------------


class Budget:
    """Sends this process SIGINT when the budget (minus the reserve) runs out: a running harvest
    stops after its last complete shard, a sweep stops with its state saved (as on Ctrl-C)."""

    def __init__(self, hours: float, reserve_minutes: float) -> None:
        self.start = time.monotonic()
        self.stop_at = self.start + (hours * 3600 - reserve_minutes * 60)
        self.fired = False
        self.timer = threading.Timer(max(0.0, self.stop_at - self.start), self._fire)
        self.timer.daemon = True

    def __enter__(self) -> Budget:
        if self.stop_at <= self.start:  # nothing left to spend: do no work, export what exists
            self.fired = True
        else:
            self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        print("\ntime budget reached: stopping the sweep to export what is finished", flush=True)
        os.kill(os.getpid(), signal.SIGINT)

    def left(self) -> str:
        s = max(0, int(self.stop_at - time.monotonic()))
        return f"{s // 3600}h{s % 3600 // 60:02d}m"


# --- the run -------------------------------------------------------------------------------------


def restore_previous_output(out: Path) -> None:
    """New Kaggle session: copy the sweep of an attached earlier output back into OUT."""
    if (out / "sweep").exists() or not Path("/kaggle/input").is_dir():
        return
    for prev in sorted(Path("/kaggle/input").glob("*/sweep/sweep.yaml")):
        print(f"continuing the sweep in {prev.parent}", flush=True)
        shutil.copytree(prev.parent, out / "sweep")
        return


def partial_best(result, target: Path) -> dict:
    """When the budget stopped the sweep before any trial finished: each architecture's best
    trial so far (by the sweep's metric) at its latest checkpoint, copied to target/<arch>/ with
    a summary.json like best/'s. Returns architecture -> TrialRecord (empty: nothing reported)."""
    import json
    import math

    sign = 1 if result.mode == "min" else -1
    picks = {}
    for t in result.trials:
        value = t.metrics.get(result.metric, math.nan)
        if t.checkpoint is None or not math.isfinite(value):
            continue
        best = picks.get(t.architecture)
        if best is None or sign * value < sign * best.metrics[result.metric]:
            picks[t.architecture] = t
    shutil.rmtree(target, ignore_errors=True)
    for arch, t in picks.items():
        shutil.copytree(Path(t.checkpoint) / "sae", target / arch)
    if picks:
        summary = {arch: t.row(result.out) for arch, t in sorted(picks.items())}
        (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return picks


def middle_layer(model: str) -> int:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not n:
        raise ValueError(f"{model}: config names no layer count; pass --layer")
    return n // 2


def hub_token() -> str | None:
    """The Hugging Face token, for gated models such as Llama-3.2-3B and for --push: HF_TOKEN
    from the environment, else (on Kaggle) the notebook's HF_TOKEN secret (Add-ons -> Secrets),
    put into the environment for huggingface_hub; None when there is neither. Never printed."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        from kaggle_secrets import UserSecretsClient  # only Kaggle's Python has it
    except ImportError:
        return None
    try:
        token = UserSecretsClient().get_secret("HF_TOKEN")
    except Exception:  # no such secret, or not attached to this notebook
        token = None
    if not token:
        print("no HF_TOKEN secret: gated Hub models will not load, and nothing is pushed",
              flush=True)
        return None
    os.environ["HF_TOKEN"] = token
    return token


def push_target(repo: str) -> str | None:
    """The Hub repo the results go to at the end: `repo` when it is set and a token is there
    (HF_TOKEN, the secret hub_token() read, or a Hugging Face login); else None, with a line
    saying why when a repo was asked for. A malformed repo id stops the run before any work."""
    if not repo:
        return None
    from sae_lab.share import push

    try:
        push.check_repo_id(repo)
    except ValueError as e:
        raise SystemExit(f"--push: {e}") from None
    try:
        push.hub_token()
    except ValueError as e:
        print(f"not pushing to {repo}: {e}", flush=True)
        return None
    return repo


def push_results(repo: str, sweep_dir: Path, private: bool = False) -> int:
    """`sae-lab push` of the finished sweep (best/, pareto.png, a model card); 0, or 1 with the
    error's line when the upload fails (the results stay in the notebook's output)."""
    from sae_lab.share.push import push

    try:
        url, paths = push(str(sweep_dir), repo, private=private,
                          commit_message="sae_lab Kaggle run")
    except (OSError, ValueError) as e:
        print(f"push to {repo} failed: {e}", flush=True)
        return 1
    print(f"pushed {len(paths)} SAE(s) ({', '.join(paths)}) to https://huggingface.co/{repo}: "
          f"{url}", flush=True)
    return 0


def run_layer(args: argparse.Namespace, model: str, live: dict) -> int:
    """--layer; else the sweep's live layer when its model runs; else the middle one."""
    if args.layer >= 0:
        return args.layer
    if live.get("layers") and model == live.get("model"):
        return int(live["layers"][0])
    return middle_layer(model)


def inputs(args: argparse.Namespace, out: Path, live: dict | None = None) -> tuple[str, str | None]:
    """(model, dataset): with --smoke, a tiny random GPT-2 and (without --dataset) the standard
    library's docstrings."""
    from sae_lab.assets import tiny_causal_lm, write_corpus

    live = live or {}
    model = args.model or live.get("model") or MODEL
    dataset = args.dataset or (None if args.smoke else live.get("dataset") or DATASET)
    if args.smoke:
        if dataset is None:
            dataset = str(write_corpus(out / "corpus.txt", args.tokens))
        model = str(tiny_causal_lm(dataset, out / "tiny-gpt2"))
        print(f"smoke run: a tiny GPT-2 with RANDOM weights ({model}) on {dataset}", flush=True)
    return model, dataset


def live_source(args: argparse.Namespace, model: str, dataset: str, layer: int,
                sweep_live: dict | None = None) -> dict:
    """The sweep's data.live section: the sweep file's own (`sweep_live`: its sizes, dtype,
    held-out rows), with the model, text and layer of this run, and the flags given."""
    flags = {"ctx_len": args.ctx_len, "batch_size": args.harvest_batch_size,
             "model_dtype": args.model_dtype}
    defaults = {"ctx_len": 256, "batch_size": 32, "model_dtype": "float32"}  # the harvest's
    return {**defaults, **(sweep_live or {}), "model": model, "dataset": dataset, "layers": [layer],
            "hook": "resid_post", "split": args.split, "text_column": args.text_column,
            "dataset_name": args.dataset_name or (DATASET_NAME if dataset == DATASET else None),
            **{k: v for k, v in flags.items() if v is not None}}


def sweep_live(sweep_file: str) -> dict:
    """base.data.live of a sweep file ({} when it has none)."""
    from sae_lab.config import load_yaml
    from sae_lab.sweep.schema import resolve_sweep_path

    path = resolve_sweep_path(sweep_file)
    raw = load_yaml(path.read_text(), str(path)) or {}
    live = ((raw.get("base") or {}).get("data") or {}).get("live")
    return live if isinstance(live, dict) else {}


def harvest_and_sweep(args, sweep, model: str, dataset: str, layer: int, shards_root: Path,
                      out: Path, stage, budget: Budget):
    """Harvest (continuing a partial one), then run or resume the sweep; returns its
    SweepResult (trials the budget cut short are unfinished), or None if the budget ran out
    before the sweep started."""
    from sae_lab.data.harvest import HarvestConfig, harvest
    from sae_lab.data.shards import read_manifest
    from sae_lab.pipeline import quiet_ray, val_shards
    from sae_lab.sweep.run import run_or_resume

    if budget.fired:
        return None
    if args.live:
        stage(f"sweep, each trial running {model} layer {layer} live (budget left "
              f"{budget.left()})")
        quiet_ray()
        result, how = run_or_resume(sweep, out / "sweep")
        print(f"sweep: {how}")
        return result
    stage(f"harvest {args.tokens} tokens of {model}, layer {layer} (budget left {budget.left()})")
    harvest(HarvestConfig(
        model=model, dataset=dataset, out=str(shards_root), layers=(layer,), hook="resid_post",
        ctx_len=args.ctx_len, batch_size=args.harvest_batch_size, max_tokens=args.tokens,
        dtype="float16", model_dtype=args.model_dtype, shard_rows=args.shard_rows,
        block_rows=min(4096, args.shard_rows), split=args.split, text_column=args.text_column,
        dataset_name=args.dataset_name or (DATASET_NAME if dataset == DATASET else None),
        progress=True,
    ))
    shards = shards_root / f"layer_{layer}"
    n_shards, held_out = len(read_manifest(shards)["shards"]), val_shards(sweep)
    if n_shards <= held_out:
        raise ValueError(f"{shards}: {n_shards} shard(s) for {held_out} held out; harvest more "
                         "--tokens or lower --shard-rows")
    stage(f"sweep: {sweep.num_trials} trials (budget left {budget.left()})")
    quiet_ray()
    result, how = run_or_resume(sweep, out / "sweep")
    print(f"sweep: {how}")
    return result


def run(args: argparse.Namespace) -> int:
    # --smoke tests the sae_lab it runs next to; a real run installs one first.
    sweeps_dir = (_checkout() / "sweeps" if args.smoke
                  else install(args.repo, args.ref, args.pip_spec))
    from sae_lab import pipeline
    from sae_lab.sweep.report import load_result
    from sae_lab.sweep.schema import load_sweep

    pipeline.quiet_env(offline=args.smoke)
    hub_token()
    target = push_target(args.push)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shards_root = Path(args.shards_dir) if args.shards_dir else out / "shards"
    sweep_file = args.sweep
    if sweeps_dir is not None and not Path(sweep_file).is_file():
        sweep_file = str(sweeps_dir / sweep_file)
    restore_previous_output(out)
    own = sweep_live(sweep_file) if args.live else {}
    model, dataset = inputs(args, out, own)
    layer = run_layer(args, model, own)
    shards = shards_root / f"layer_{layer}"
    if args.live:
        sweep = load_sweep(sweep_file, args.overrides,
                           live=live_source(args, model, dataset, layer, own))
    else:
        sweep = load_sweep(sweep_file, args.overrides, shards=str(shards))  # errors before work
    stage = pipeline.Stages(2 if args.live else 4)
    result = None
    with Budget(args.budget_hours, args.reserve_minutes) as budget:
        try:
            result = harvest_and_sweep(args, sweep, model, dataset, layer, shards_root, out,
                                       stage, budget)
        except KeyboardInterrupt as e:
            if not budget.fired:
                raise
            print(f"stopped by the time budget: {e}", flush=True)
        finally:
            import ray

            ray.shutdown()
    if result is None and (out / "sweep" / "tune").is_dir():
        result = load_result(out / "sweep", sweep)
    code = export(args, sweep, result, shards, out, model, stage, budget.fired)
    if target and code == 0:
        return push_results(target, out / "sweep", args.push_private)
    if target:
        print(f"not pushed to {target}: the sweep has not finished (the run that finishes it "
              "pushes)", flush=True)
    return code


def export(args, sweep, result, shards: Path, out: Path, model: str, stage, stopped: bool) -> int:
    """Held-out metrics, SAELens exports and the feature browser of the best SAEs the sweep
    finished (or, if none finished, of its best unfinished trials)."""
    from sae_lab import pipeline

    if result is None:
        print("no trial has reported yet: nothing to export; run again to continue")
        return 130 if stopped else 1
    print(result.table())
    best = out / "sweep" / "best"
    picks = {a: result.best(a) for a in pipeline.best_dirs(result)}
    if not picks:
        best = out / "partial_best"
        picks = partial_best(result, best)
        if not picks:
            print("no trial has reported yet: nothing to export; run again to continue")
            return 130 if stopped else 1
        print("no trial has finished yet: exporting each architecture's best unfinished trial "
              f"at its latest checkpoint ({best})")
    saes = {arch: best / arch for arch in picks}
    if args.live:
        return export_live(saes, out, stopped, stage)
    stage("held-out metrics and SAELens exports")
    print(pipeline.heldout_table(pipeline.evaluate_and_export(
        saes, shards, out, pipeline.val_shards(sweep))))
    sign = 1 if result.mode == "min" else -1
    winner = min(picks, key=lambda a: sign * picks[a].metrics[result.metric])
    stage(f"feature browser of the best SAE ({winner})")
    browser = pipeline.browse(saes[winner], shards, out / "browser", model, args.browser_latents)
    pipeline.print_outputs({
        "results": out / "sweep" / "results.csv", "Pareto plot": out / "sweep" / "pareto.png",
        "checkpoints (sae_lab.load)": best, "exports (SAELens)": out / "exports",
        "held-out metrics": out / "eval", "feature browser": browser})
    if stopped:
        print("the budget ran out before the sweep finished: run again to continue")
        return 130
    return 0


def export_live(saes: dict, out: Path, stopped: bool, stage) -> int:
    """--live: SAELens exports of the best SAEs; their metrics are the trials' own held-out
    ones (the results table above), as no shards exist to evaluate on."""
    from sae_lab.export import export_saelens
    from sae_lab.lm.attach import load_sae_dir

    stage("SAELens exports")
    for arch, d in saes.items():
        export_saelens(load_sae_dir(d), out / "exports" / arch)
    print(f"exports (SAELens): {out / 'exports'}")
    if stopped:
        print("the budget ran out before the sweep finished: run again to continue")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run(parse_args()))
