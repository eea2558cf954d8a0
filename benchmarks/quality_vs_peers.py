"""Held-out FVU at matched L0: sae_lab against SAELens and dictionary_learning, same budget.

    python benchmarks/quality_vs_peers.py                      # MiniLM layer 3, 300 steps
    python benchmarks/quality_vs_peers.py --archs relu,gated --steps 100
    python benchmarks/quality_vs_peers.py --keep-shards /tmp/shards   # harvest once, reuse after
    python benchmarks/quality_vs_peers.py --libs sae_lab --init-near-data --sparsity-warmup 50

The demo's corpus (docstrings of this Python's standard library) through all-MiniLM-L6-v2 (the
bundled weights: offline), layer 3, is harvested once. Every library then trains an SAE of each
shared architecture on the same rows in the same order (sae_lab's own batch stream, handed to the
peers batch by batch), with the same d_sae, batch, steps, learning rate and lr schedule (linear
warm-up, linear decay over the last 20%), at three sparsity settings; everything else is each
library's default. Inputs are scaled so E||x||^2 = d_in for all of them (sae_lab does that itself;
the peers get pre-scaled rows), and FVU is scale-free.

For each (library, architecture) the held-out FVU is interpolated at L0 32, 64 and 128, log-log
between the two nearest runs ("-" outside the runs' L0 range), with the dead fraction of the run
nearest L0 64: latents that fire on none of the held-out tokens (one rule for every library).

This script installs nothing: a peer is run when it is importable (`pip install sae-lens
dictionary-learning`, best in a separate virtual environment with sae_lab installed), and the
output says which were found, with their versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import inspect
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sae_lab.data.arrays import ShuffledStream  # noqa: E402
from sae_lab.data.shards import iter_blocks  # noqa: E402
from sae_lab.training.config import TrainConfig  # noqa: E402
from sae_lab.training.run import train  # noqa: E402
from sae_lab.training.schedules import lr_factor  # noqa: E402

ARCHS = ("relu", "topk", "batchtopk", "jumprelu", "gated")
TARGET_L0 = (32, 64, 128)
# Three sparsity settings per (library, architecture): k for TopK-like, the penalty coefficient
# otherwise, spread to bracket L0 32-128 at 300 steps on MiniLM layer 3 (inputs at
# E||x||^2 = d_in); a peer whose runs miss the range shows "-".
SETTINGS = {
    "sae_lab": {"relu": [2.0, 4.0, 8.0], "topk": [32, 64, 128], "batchtopk": [32, 64, 128],
                "jumprelu": [0.25, 1.0, 4.0], "gated": [1.0, 3.0, 9.0]},
    "sae_lens": {"relu": [2.0, 5.0, 12.0], "topk": [32, 64, 128], "batchtopk": [32, 64, 128],
                 "jumprelu": [0.5, 2.0, 8.0], "gated": [2.0, 5.0, 12.0]},
    "dictionary_learning": {"relu": [0.02, 0.05, 0.12], "topk": [32, 64, 128],
                            "batchtopk": [32, 64, 128], "jumprelu": [32, 64, 128],
                            "gated": [0.02, 0.05, 0.12]},
}


# --- data --------------------------------------------------------------------------------------

def harvest(tmp: Path, tokens: int, layer: int) -> Path:
    from sae_lab.assets import minilm_path, write_corpus
    from sae_lab.data import harvest as H

    cfg = H.HarvestConfig(model=str(minilm_path()), dataset=str(
        write_corpus(tmp / "corpus.txt", tokens + 8192)), layers=(layer,), max_tokens=tokens,
        out=str(tmp / "shards"), shard_rows=32_768, progress=False)
    H.harvest(cfg)
    return tmp / "shards" / f"layer_{layer}"


def load_rows(shards: Path, held_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) rows: the last `held_out` rows are held out."""
    rows = torch.cat([b["acts"].float() for b in iter_blocks(str(shards))])
    return rows[:-held_out], rows[-held_out:]


# --- one run per library -----------------------------------------------------------------------

def metrics(encode, decode, held: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        z = encode(held)
        x_hat = decode(z)
    fvu = float((x_hat - held).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
    return {"fvu": fvu, "l0": float((z != 0).sum(-1).float().mean()),
            "dead": float(((z != 0).sum(0) == 0).float().mean())}


def run_sae_lab(arch: str, s: float, npy: Path, n_val: int, n_rows: int, a: argparse.Namespace):
    sae = {"architecture": arch, "d_sae": a.d_sae}
    sae["k" if arch in ("topk", "batchtopk") else "sparsity_coef"] = s
    cfg = TrainConfig.from_dict({
        "sae": sae, "data": {"npy": str(npy), "val_fraction": n_val / n_rows + 1e-9},
        "batch_size": a.batch, "max_tokens": a.steps * a.batch, "lr": a.lr, "seed": a.seed,
        "val_every_steps": 10 * a.steps, "save_checkpoints": False, "progress_bar": False,
        "out_dir": tempfile.mkdtemp(), "init_near_data": a.init_near_data,
        "sparsity_warmup_steps": a.sparsity_warmup,
    })
    return train(cfg, logger=False).sae


def peer_loop(params, step_fn, batches, a, after=None) -> None:
    """Adam at sae_lab's lr schedule over the shared batches; step_fn(x, step) -> loss."""
    opt = torch.optim.Adam(params, lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: lr_factor(t, 50, a.steps, 0.8))
    for step, x in zip(range(a.steps), batches, strict=False):
        loss = step_fn(x, step)
        opt.zero_grad()
        loss.backward()
        if after is not None:
            after("grad")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if after is not None:
            after("step")


def run_sae_lens(arch: str, s: float, batches, d_in: int, a: argparse.Namespace):
    from sae_lens.saes import sae as base
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.gated_sae import GatedTrainingSAE, GatedTrainingSAEConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    kinds = {"relu": (StandardTrainingSAE, StandardTrainingSAEConfig, "l1_coefficient"),
             "gated": (GatedTrainingSAE, GatedTrainingSAEConfig, "l1_coefficient"),
             "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, "l0_coefficient"),
             "topk": (TopKTrainingSAE, TopKTrainingSAEConfig, "k"),
             "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, "k")}
    cls, cfg_cls, knob = kinds[arch]
    torch.manual_seed(a.seed)
    sae = cls(cfg_cls(d_in=d_in, d_sae=a.d_sae, **{knob: s}))
    coefs = sae.get_coefficients()
    since_fired = torch.zeros(a.d_sae, dtype=torch.long)

    def step_fn(x, step):
        values = {}
        for name, c in coefs.items():
            if isinstance(c, base.TrainCoefficientConfig):
                warm = c.warm_up_steps
                values[name] = c.value * (min(1.0, (step + 1) / warm) if warm else 1.0)
            else:
                values[name] = c
        out = sae.training_forward_pass(base.TrainStepInput(
            sae_in=x, coefficients=values, dead_neuron_mask=since_fired >= 1_000_000 // a.batch,
            n_training_steps=step, is_logging_step=False))
        fired = (out.feature_acts > 0).any(0)
        since_fired.add_(1)
        since_fired[fired] = 0
        return out.loss

    def after(when):
        if when == "grad" and hasattr(sae, "remove_gradient_parallel_to_decoder_directions") \
                and getattr(sae.cfg, "normalize_decoder", False):
            sae.remove_gradient_parallel_to_decoder_directions()

    sae.train()
    peer_loop(list(sae.parameters()), step_fn, batches, a, after)
    sae.eval()
    return sae.encode, sae.decode


def run_dictionary_learning(arch: str, s: float, batches, d_in: int, a: argparse.Namespace):
    from dictionary_learning import trainers as T

    # JumpReLU's knob is its target L0 (its loss is sparsity_penalty * (L0 / target_l0 - 1)^2).
    cls, knob = {"relu": (T.StandardTrainer, "l1_penalty"), "gated": (T.GatedSAETrainer,
                 "l1_penalty"), "jumprelu": (T.JumpReluTrainer, "target_l0"),
                 "topk": (T.TopKTrainer, "k"), "batchtopk": (T.BatchTopKTrainer, "k")}[arch]
    decay_start = int(0.8 * a.steps)
    # Its defaults are sized for runs of 10^4-10^5 steps: a 2,000-step sparsity warm-up (which
    # it refuses past decay_start; the other libraries default to none, so none here either)
    # and a BatchTopK inference threshold first set at step 1,000 (here at 10% of the run).
    kwargs = {"steps": a.steps, "activation_dim": d_in, "dict_size": a.d_sae, "layer": 0,
              "lm_name": "minilm", "lr": a.lr, "seed": a.seed, "device": "cpu",
              "warmup_steps": min(50, decay_start - 1), "decay_start": decay_start,
              "sparsity_warmup_steps": None, "threshold_start_step": a.steps // 10,
              knob: int(s) if knob == "k" else s}
    accepted = inspect.signature(cls.__init__).parameters
    trainer = cls(**{k: v for k, v in kwargs.items() if k in accepted})
    for step, x in zip(range(a.steps), batches, strict=False):
        trainer.update(step, x)
    ae = trainer.ae.eval()
    return ae.encode, ae.decode


# --- interpolation and the table ---------------------------------------------------------------

def interpolate(points: list[tuple[float, float]], l0: float) -> float | None:
    """FVU at l0, log-log between the two nearest runs on either side; None outside."""
    pts = sorted(p for p in points if p[0] > 0 and p[1] > 0)
    for (l_a, f_a), (l_b, f_b) in zip(pts, pts[1:], strict=False):
        if l_a <= l0 <= l_b and l_b > l_a:
            t = (math.log(l0) - math.log(l_a)) / (math.log(l_b) - math.log(l_a))
            return math.exp(math.log(f_a) + t * (math.log(f_b) - math.log(f_a)))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--libs", default="sae_lab,sae_lens,dictionary_learning")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--d-sae", type=int, default=6144)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--held-out", type=int, default=32_768)
    ap.add_argument("--shards", help="harvested MiniLM shards to reuse (default: harvest)")
    ap.add_argument("--keep-shards", metavar="DIR",
                    help="harvest into DIR/shards/layer_<layer> unless it is there already, "
                         "then reuse it (instead of a temporary harvest)")
    ap.add_argument("--init-near-data", action="store_true",
                    help="sae_lab runs with init_near_data: true (the peers are unchanged)")
    ap.add_argument("--sparsity-warmup", type=int, default=0, metavar="STEPS",
                    help="sae_lab runs with sparsity_warmup_steps STEPS (default 0)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    libs = []
    for lib, dist in (("sae_lab", "sae-lab"), ("sae_lens", "sae-lens"),
                      ("dictionary_learning", "dictionary-learning")):
        if lib not in a.libs.split(","):
            continue
        try:
            __import__(lib)
        except ImportError:
            print(f"{lib}: not importable, skipped")
            continue
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = "?"
        libs.append(lib)
        print(f"found {lib} {version}")
    print(f"torch {torch.__version__}; MiniLM layer {a.layer}, d_sae {a.d_sae}, batch {a.batch}, "
          f"{a.steps} steps, lr {a.lr}")

    label = {"sae_lab": "sae_lab" + "".join(
        f" ({t})" for t, on in (("init_near_data", a.init_near_data),
                                (f"sparsity warm-up {a.sparsity_warmup}", a.sparsity_warmup))
        if on)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = a.steps * a.batch + a.held_out + a.batch
        if a.shards:
            shards = Path(a.shards)
        elif a.keep_shards:
            shards = Path(a.keep_shards) / "shards" / f"layer_{a.layer}"
            if not shards.is_dir():
                shards = harvest(Path(a.keep_shards), tokens, a.layer)
            print(f"shards: {shards}")
        else:
            shards = harvest(tmp, tokens, a.layer)
        train_rows, held = load_rows(shards, a.held_out)
        train_rows = train_rows[: max(a.steps * a.batch, a.batch)]
        npy = tmp / "rows.npy"
        np.save(npy, torch.cat([train_rows, held]).numpy())
        d_in = train_rows.shape[1]
        scale = (d_in / train_rows[:a.batch].double().pow(2).sum(-1).mean()).sqrt().float()

        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for arch in a.archs.split(","):
            for lib in libs:
                for s in SETTINGS[lib][arch]:
                    t0 = time.perf_counter()
                    if lib == "sae_lab":
                        sae = run_sae_lab(arch, s, npy, len(held), len(train_rows) + len(held),
                                          a)
                        m = metrics(sae.encode, lambda z, sae=sae: sae.decode(z, held), held)
                    else:
                        stream = (x * scale for x in ShuffledStream(train_rows, a.batch, a.seed))
                        runner = run_sae_lens if lib == "sae_lens" else run_dictionary_learning
                        try:
                            enc, dec = runner(arch, s, stream, d_in, a)
                        except Exception as e:  # a peer's API changed: say so, go on
                            print(f"{lib} {arch} {s}: failed: {type(e).__name__}: {e}")
                            continue
                        m = metrics(enc, dec, held * scale)
                    m["setting"] = s
                    results.setdefault((label.get(lib, lib), arch), []).append(m)
                    print(f"  {lib:20s} {arch:9s} {s:>7g}  FVU {m['fvu']:.3f}  L0 "
                          f"{m['l0']:7.1f}  dead {m['dead']:.1%}  "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    print()
    print("| architecture | library | " + " | ".join(f"FVU @ L0 {t}" for t in TARGET_L0)
          + " | dead (run nearest L0 64) |")
    print("|---|---|" + "---|" * (len(TARGET_L0) + 1))
    for (lib, arch), runs in results.items():
        pts = [(r["l0"], r["fvu"]) for r in runs]
        cells = [interpolate(pts, t) for t in TARGET_L0]
        nearest = min(runs, key=lambda r: abs(math.log(max(r["l0"], 1e-9) / 64)))
        print(f"| {arch} | {lib} | " + " | ".join("-" if c is None else f"{c:.3f}"
                                                 for c in cells)
              + f" | {nearest['dead']:.1%} |")


if __name__ == "__main__":
    main()
