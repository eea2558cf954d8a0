"""Metrics against values computed by hand."""

import pytest
import torch

from sae_lab.sae import ARCHITECTURES, sae_config
from sae_lab.training.metrics import ReconStats, fvu, l0


def test_fvu_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean (2, 1); total variance 1+1+1+1 = 4
    x_hat = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # squared error 0+1+1+0 = 2
    assert fvu(x, x_hat).item() == pytest.approx(0.5)
    # Explained variance is about the mean, not zero: predicting the mean gives FVU 1.
    assert fvu(x, x.mean(0).expand_as(x)).item() == pytest.approx(1.0)


def test_l0_by_hand():
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, -1.0]])
    assert l0(z).item() == pytest.approx(1.5)


def test_recon_stats_over_batches_equals_whole_set():
    torch.manual_seed(0)
    x = torch.randn(100, 8) * 3 + 5
    x_hat = x + 0.5 * torch.randn(100, 8)
    z = torch.relu(torch.randn(100, 20))
    stats = ReconStats()
    for i in range(0, 100, 30):  # uneven batches
        stats.update(x[i : i + 30], x_hat[i : i + 30], z[i : i + 30])
    m = stats.compute()
    assert m["fvu"] == pytest.approx(fvu(x, x_hat).item(), rel=1e-9)
    assert m["mse"] == pytest.approx((x - x_hat).pow(2).mean().item(), rel=1e-5)
    assert m["l0"] == pytest.approx(l0(z).item(), rel=1e-9)
    assert m["l1"] == pytest.approx(z.sum(1).mean().item(), rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).mean().item()
    assert m["cos"] == pytest.approx(cos, rel=1e-6)


def test_dead_fraction_by_hand():
    sae = ARCHITECTURES["relu"](sae_config("relu", d_in=4, d_sae=4, dead_tokens=10))
    fired = torch.tensor([True, False, False, False])
    sae.update_dead(fired, 6)  # 6 tokens: nobody dead yet
    assert sae.dead_mask.float().mean().item() == 0
    sae.update_dead(torch.tensor([False, True, False, False]), 4)  # latents 2, 3: 10 tokens silent
    assert sae.dead_mask.tolist() == [False, False, True, True]
    assert sae.dead_mask.float().mean().item() == 0.5


def test_one_evaluation_loop_for_training_and_eval():
    # train.run.evaluate_rows and evaluate.evaluate_sae both run train.metrics.stream_stats.
    from helpers.tiny import make_sae

    from sae_lab.evaluate import evaluate_sae
    from sae_lab.training.metrics import RECON_METRICS
    from sae_lab.training.run import evaluate_rows

    sae = make_sae(d_in=16, d_sae=32, arch="relu")
    torch.manual_seed(1)
    batches = [torch.randn(n, 16) for n in (7, 5, 9)]
    rows = evaluate_rows(sae, batches)
    full = evaluate_sae(sae, batches).metrics
    whole = ReconStats()
    x = torch.cat(batches)
    z = sae.encode(x)
    whole.update(x, sae.decode(z, x), z)
    assert tuple(whole.compute()) == RECON_METRICS
    for name in RECON_METRICS:
        assert rows[name] == pytest.approx(full[name]) == pytest.approx(whole.compute()[name])
    assert rows["val_tokens"] == full["tokens"] == 21
    assert evaluate_rows(sae, batches, max_batches=1)["val_tokens"] == 7


def test_wrong_width_is_one_line_in_both_evaluations():
    # Before: evaluate_rows failed inside the matmul (a RuntimeError naming no culprit).
    from helpers.tiny import make_sae

    from sae_lab.training.run import evaluate_rows

    with pytest.raises(ValueError, match="activations have width 8; the SAE has d_in=16"):
        evaluate_rows(make_sae(d_in=16, d_sae=32, arch="relu"), [torch.randn(4, 8)])


def test_metric_names_are_defined_once():
    from sae_lab.sweep import report
    from sae_lab.sweep import schema as space
    from sae_lab.training import metrics

    assert space.METRICS == metrics.SWEEP_METRICS == (metrics.OBJECTIVE, *metrics.VAL_METRICS)
    assert space.SweepConfig.__pydantic_fields__["metric"].annotation.__args__ == space.METRICS
    assert report.METRIC_COLUMNS[:len(metrics.VAL_METRICS)] == metrics.VAL_METRICS
    assert set(metrics.VAL_METRICS) - {metrics.DEAD_FRAC} <= set(metrics.RECON_METRICS)
