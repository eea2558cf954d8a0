"""The known-answer family: generator settings x architectures, with hyperparameters from one
rule (`train_config`), shared by tests/sae/test_known_answer.py and the README's table
(`PYTHONPATH=tests python -m helpers.recovery_family` prints it)."""

from __future__ import annotations

import math
import sys
import tempfile
import time
from typing import Any, NamedTuple

import torch

from sae_lab.data.synthetic import make_features, recovery
from sae_lab.sae import ARCHITECTURES
from sae_lab.sae.batchtopk import BatchTopKSAE
from sae_lab.sae.matryoshka import MatryoshkaSAE
from sae_lab.training.config import TrainConfig
from sae_lab.training.pack import train_pack

# Each setting moves some of the generator's knobs away from "base". Seed 1, not the training
# seed 0 (see test_the_sae_does_not_start_at_the_answer).
BASE = {"d": 32, "n_features": 96, "active": 3.0, "seed": 1}
SETTINGS: dict[str, dict[str, Any]] = {
    "base": {},
    "skewed+noisy": {"freq_exponent": 0.7, "noise_std": 0.05},
    "heavy+wide": {"magnitude_dist": "lognormal", "magnitude_std": 1.0, "d": 48,
                   "n_features": 160, "active": 5.0},
}

TOKENS = 1_800_000


def train_config(arch: str, setting: str, out_dir: str, seed: int = 1) -> TrainConfig:
    """The one rule, never tuned per setting. Latents: as many as true features, the regime of
    real activations, where features outnumber latents and every latent has something to learn
    (with spare latents, a penalty SAE rightly leaves the spares dead, and a dead-fraction bar
    would ask for duplicates). Inputs are normalised to E||x||^2 = d, so an active feature's
    magnitude is about a = sqrt(d / active). TopK's k caps every token, so it must cover the
    busy ones: k = 2 * active (the issue's rule). A batch-wide budget (BatchTopK, Matryoshka)
    follows each token's own count, and its slack beyond that goes to latents fitting other
    features' residue: k = 1.25 * active (at 2 * active BatchTopK found 0.88-0.90 on skewed+noisy).
    Matryoshka: every prefix must reconstruct x alone, so the inner one holds as many latents as
    the others get and an outer group adds a quarter more, kept alive by AuxK at 0.5 (a prefix
    smaller than the features can only hold blends: 0.18 with the library's LM groups). An L1
    penalty shrinks each activation by ~lambda/2, so lambda = c * a; an L0 penalty charges lambda
    per fire against a gain ~a^2, so lambda = c * a^2. Steps, not tokens, limit these small runs:
    lr 1e-2 at batch 512 for 1.8M tokens (3516 steps; at 900k, TopK on skewed+noisy fell to 0.90
    with the features of seed 3). `seed` draws other features."""
    data = BASE | SETTINGS[setting] | {"seed": seed}
    a2 = data["d"] / data["active"]
    sae: dict[str, Any] = {"architecture": arch, "d_sae": data["n_features"],
                           "dead_tokens": 10_000}
    cls = ARCHITECTURES[arch]
    if issubclass(cls, BatchTopKSAE):
        sae["k"] = math.ceil(1.25 * data["active"])
    elif cls.k_based:
        sae["k"] = math.ceil(2 * data["active"])
    if issubclass(cls, MatryoshkaSAE):
        sae |= {"d_sae": data["n_features"] * 5 // 4, "group_fractions": [0.8, 0.2],
                "aux_coef": 0.5}
    if not cls.k_based:
        sae["sparsity_coef"] = {"relu": 0.35 * math.sqrt(a2), "gated": 1.0 * math.sqrt(a2),
                                "jumprelu": 0.1 * a2}[arch]
    return TrainConfig.from_dict({
        "sae": sae, "data": {"synthetic": data | {"n_tokens": TOKENS}},
        "batch_size": 512, "max_tokens": TOKENS, "lr": 1e-2, "val_every_steps": 10_000,
        "save_checkpoints": False, "progress_bar": False, "out_dir": out_dir,
    })


class Cell(NamedTuple):
    matched: float
    dead: float
    fvu: float
    l0: float
    seconds: float

    def ok(self) -> bool:
        return self.matched >= 0.9 and self.dead <= 0.05

    def __str__(self) -> str:
        return f"{self.matched:.2f} / {self.dead:.2f}"


def run_setting(setting: str, out_dir: str, seed: int = 1,
                archs: list[str] | None = None) -> dict[str, Cell]:
    """Every architecture's cell of one setting, trained as one pack: one data stream, each
    member updated exactly as alone (tests/training/test_pack.py), a quarter less CPU than one
    run per cell. `seconds` is the pack's CPU time shared out evenly."""
    archs = archs or sorted(ARCHITECTURES)
    cfgs = [train_config(a, setting, f"{out_dir}/{a}", seed) for a in archs]
    # One thread: the sums inside (and so a cell near the bar) come out the same in pytest
    # (2 threads, conftest) as in the table's command; these shapes gain little from a second.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = time.process_time()
        results = train_pack(cfgs, archs, out_dir, logger=False, save_checkpoints=False,
                             save_final=False)
        seconds = (time.process_time() - t) / len(archs)
    finally:
        torch.set_num_threads(threads)
    cells = {}
    for cfg, r in zip(cfgs, results, strict=True):
        if r.sae is None:  # failed (a non-finite loss): a cell that cannot pass
            cells[r.name] = Cell(0.0, 1.0, math.nan, math.nan, seconds)
            continue
        score = recovery(r.sae.W_dec, make_features(cfg.data.synthetic).features, threshold=0.9)
        m = r.metrics
        cells[r.name] = Cell(score.frac_matched, m["dead_frac"], m["fvu"], m["l0"], seconds)
    return cells


def table(cells: dict[tuple[str, str], Cell]) -> str:
    """Markdown: one row per architecture, 'matched / dead' per setting."""
    archs = sorted({a for a, _ in cells})
    settings = [s for s in SETTINGS if any((a, s) in cells for a in archs)]
    lines = ["| architecture | " + " | ".join(settings) + " |",
             "|---" * (len(settings) + 1) + "|"]
    for a in archs:
        lines.append(f"| {a} | " + " | ".join(str(cells.get((a, s), "-")) for s in settings)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    # PYTHONPATH=tests python -m helpers.recovery_family [ARCHS [SETTINGS [SEED]]], comma-separated;
    # "" for all
    archs = sys.argv[1].split(",") if len(sys.argv) > 1 and sys.argv[1] else sorted(ARCHITECTURES)
    settings = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else list(SETTINGS)
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    cells = {}
    for s in settings:
        for a, c in run_setting(s, tempfile.mkdtemp(), seed, archs).items():
            cells[a, s] = c
            print(f"{a:10s} {s:7s} matched {c.matched:.3f} dead {c.dead:.3f} fvu {c.fvu:.3f} "
                  f"l0 {c.l0:.2f} cpu {c.seconds:.1f}s", file=sys.stderr, flush=True)
    print(table(cells))
