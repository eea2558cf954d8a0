"""Each architecture, trained through the full Lightning path on synthetic activations built from
known features, must find those features; a deliberately broken SAE must not pass the same bounds.
Below the single setting, the family: several generator settings, one rule for the
hyperparameters, every architecture (tests/helpers/recovery_family.py).

Data: 256 unit directions in d=128, ~4 active per token, magnitudes N(1, 0.25). Random directions
in d=128 overlap by ~1/11 each (in d=64, by ~1/8, and the interference of the active features
alone costs a linear encoder ~10% FVU, which would make an FVU <= 0.1 bound a coin toss); the
problem stays 2x overcomplete with 4x as many latents as dimensions. At 100k training tokens
every feature is seen ~1,500 times. CPU time per architecture (process_time of train(), loaded
shared machine, 2 threads; halve for wall time on an idle 2-core box): TopK k=8 150k tokens 101 s,
BatchTopK k=6 150k 114 s, ReLU lambda 2 150k 96 s, JumpReLU lambda 4 150k 129 s, Gated lambda 6
150k 131 s,
Matryoshka k=6 prefixes (384, 512) 150k 98 s (matched 0.94, FVU 0.077, L0 6.0); broken control
76 s (matched 0.0, FVU 0.71).
"""

import pytest
from helpers.recovery_family import SETTINGS, run_setting, table

from sae_lab.data.synthetic import make_features, recovery
from sae_lab.sae import ARCHITECTURES
from sae_lab.training.config import TrainConfig
from sae_lab.training.run import build_module, make_datamodule, train

# Seed 1, not the training seed 0: make_features and the SAE's initial decoder both draw
# torch.randn rows, so with one seed the SAE would start with the true features in W_dec.
DATA = {"d": 128, "n_features": 256, "active": 4, "n_tokens": 60_000, "seed": 1}

# Per-architecture settings, one table: SAE fields under "sae", training overrides (token budget)
# under "train"; the architecture list itself is the registry's.
ARCH_SETTINGS: dict[str, dict[str, dict]] = {
    # k above the typical count (P(Poisson(4) > 8) ~ 2%); k=6 at 100k tokens: FVU 0.105
    "topk": {"sae": {"k": 8}, "train": {"max_tokens": 150_000}},
    # variable per token; k=4 at 100k tokens: matched 0.76, FVU 0.22 (threshold lags)
    "batchtopk": {"sae": {"k": 6}, "train": {"max_tokens": 150_000}},
    # L1 shrinks each active latent by lambda/2: lambda 3 costs FVU 0.15, lambda 0.5 gives L0 117
    "relu": {"sae": {"sparsity_coef": 2.0}, "train": {"max_tokens": 150_000}},
    # gate L1 as relu's; lambda 3 at 100k tokens left L0 22.6, matched 0.17
    "gated": {"sae": {"sparsity_coef": 6.0}, "train": {"max_tokens": 150_000}},
    # a fire costs lambda; spurious fires gain < 1 here, true ones ~30: lambda 1 gave L0 10.4
    "jumprelu": {"sae": {"sparsity_coef": 4.0}, "train": {"max_tokens": 150_000}},
    # BatchTopK selection, nested prefixes. The features here are flat (equally frequent, no
    # hierarchy), so a prefix smaller than their 256 can only reconstruct x with blends of them,
    # and the later latents learn corrections to the blends: the default prefixes (32 ... 512)
    # gave matched 0.29 at 100k tokens, 0.63 at 150k; prefixes (256, 512) 0.91 at 150k. The
    # smallest prefix holds all 256 with slack (every architecture gets 512 latents for them).
    "matryoshka": {"sae": {"k": 6, "group_fractions": [0.75, 0.25]},
                   "train": {"max_tokens": 150_000}},
}


def config(arch: str, out_dir, data: dict = DATA) -> TrainConfig:
    settings = ARCH_SETTINGS.get(arch, {})
    return TrainConfig.from_dict(
        {
            # dead_tokens ~20 batches: AuxK can revive latents within this short run, and
            # dead_frac means something (the 1M default exceeds the whole run).
            "sae": {"architecture": arch, "expansion_factor": 4, "dead_tokens": 10_000,
                    **settings.get("sae", {})},
            "data": {"synthetic": data},
            "batch_size": 512,
            "max_tokens": 100_000,
            "lr": 3e-3,
            "val_every_steps": 1000,
            "save_checkpoints": False,
            "progress_bar": False,
            "out_dir": str(out_dir),
            **settings.get("train", {}),
        }
    )


def trained(arch: str, out_dir) -> tuple[TrainConfig, object]:
    cfg = config(arch, out_dir)
    return cfg, train(cfg, logger=False)


def passes_known_answer(cfg: TrainConfig, result) -> tuple[bool, str]:
    """The bounds every architecture must meet, and a line saying how it did."""
    score = recovery(result.sae.W_dec, make_features(cfg.data.synthetic).features, threshold=0.9)
    m = result.metrics
    ok = score.frac_matched >= 0.9 and m["fvu"] <= 0.1 and m["l0"] <= 12  # ~4 true per token
    return ok, f"matched {score.frac_matched:.3f}, fvu {m['fvu']:.4f}, l0 {m['l0']:.2f}"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_sae_does_not_start_at_the_answer(arch, tmp_path):
    """With the library's default seeds (data seed == training seed == 0) the features and the SAE
    init must come from different streams; the old make_features drew the same one."""
    cfg = config(arch, tmp_path, data=DATA | {"seed": 0, "n_tokens": 1024})
    assert cfg.data.synthetic.seed == cfg.seed
    sae = build_module(cfg, make_datamodule(cfg)).sae
    score = recovery(sae.W_dec, make_features(cfg.data.synthetic).features, threshold=0.9)
    assert score.frac_matched < 0.05, score


# Architectures measured short of the bounds at the settings above (figures from the last run,
# 2026-12-02); strict, so a fix that makes one pass fails here until it is taken off this list.
SHORT_OF_BOUNDS: dict[str, str] = {}


def arch_params() -> list:
    return [
        pytest.param(a, marks=pytest.mark.xfail(strict=True, reason=SHORT_OF_BOUNDS[a]))
        if a in SHORT_OF_BOUNDS else a
        for a in sorted(ARCHITECTURES)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("arch", arch_params())
def test_recovers_known_features(arch, tmp_path):
    assert arch in ARCH_SETTINGS, f"add {arch}'s settings to ARCH_SETTINGS"
    ok, how = passes_known_answer(*trained(arch, tmp_path))
    assert ok, how


@pytest.mark.slow
def test_a_broken_sae_fails_the_same_bounds(tmp_path, monkeypatch):
    """TopK whose decoder never learns (its gradient dropped before each optimiser step): the
    encoder alone can still lower the loss, but cannot find the features."""
    from sae_lab.sae.base import SAE

    def frozen_decoder(self) -> None:
        self.W_dec.grad = None

    monkeypatch.setattr(SAE, "remove_parallel_grads", frozen_decoder)
    ok, how = passes_known_answer(*trained("topk", tmp_path))
    assert not ok, how


# --- the family: generator settings x every architecture, hyperparameters from one rule --------
# (tests/helpers/recovery_family.py: settings, the rule, the table;
# `PYTHONPATH=tests python -m helpers.recovery_family`).
# The bar is matched >= 0.9 at cos >= 0.9 with <= 5% dead in every cell. Every cell meets
# it (2026-12-02: the lowest is TopK on skewed+noisy, 0.94; over feature seeds 1-3, ReLU's 0.92
# there, seed 3). A cell measured short of it goes here as 'matched / dead': strict where far
# from the bar, so a fix that lifts it fails here until it leaves this table; not strict within
# 0.02 of the bar, where another CPU's sums could tip the cell either way.
FAMILY_SHORT: dict[tuple[str, str], str] = {}
MARGINAL: set[tuple[str, str]] = set()
"""Cells within 0.02 of the bar (either side): xfail, not strict."""


def family_params() -> list:
    params = []
    for setting in SETTINGS:
        for arch in sorted(ARCHITECTURES):
            cell = (arch, setting)
            # a setting's cells train as one pack: all on one xdist worker, trained once
            marks = [pytest.mark.xdist_group(f"family-{setting}")]
            if cell in FAMILY_SHORT:
                marks.append(pytest.mark.xfail(strict=cell not in MARGINAL,
                                               reason=f"measured {FAMILY_SHORT[cell]}"))
            params.append(pytest.param(arch, setting, marks=marks, id=f"{arch}-{setting}"))
    return params


TRAINED: dict = {}
"""Cells trained in this process, kept across module setups: xdist may run other tests between
a setting's cells, and pytest then sets the module up again."""


@pytest.fixture(scope="module")
def family_cells(tmp_path_factory):
    """A setting's cells, trained (as one pack) when a test first asks for one of them; the table
    is printed when the module ends (pytest -s)."""

    def cell(arch: str, setting: str):
        if (arch, setting) not in TRAINED:
            out = tmp_path_factory.mktemp(f"family-{setting}")
            TRAINED.update({(a, setting): c for a, c in run_setting(setting, str(out)).items()})
        return TRAINED[arch, setting]

    yield cell
    if TRAINED:
        print("\nknown-answer family, matched (cos >= 0.9) / dead fraction:\n" + table(TRAINED))


@pytest.mark.slow
@pytest.mark.parametrize("arch, setting", family_params())
def test_family_recovers_known_features(arch, setting, family_cells):
    cell = family_cells(arch, setting)
    assert cell.ok(), f"{arch} on {setting}: matched / dead {cell}, fvu {cell.fvu:.3f}, " \
                      f"l0 {cell.l0:.2f}"
