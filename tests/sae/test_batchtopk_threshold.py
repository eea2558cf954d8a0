"""BatchTopK's inference threshold, learnt in training, must give held-out L0 close to k
(it once gave 10.9 and 13.2 for k=24 in the demo)."""

import pytest

from sae_lab.training.config import TrainConfig
from sae_lab.training.run import train


@pytest.mark.parametrize("k, k_start", [(12, 0), (12, 48)])
def test_batchtopk_held_out_l0_matches_k(k, k_start, tmp_path):
    cfg = TrainConfig.from_dict({
        "sae": {"architecture": "batchtopk", "expansion_factor": 4, "dead_tokens": 50_000,
                "k": k, "k_start": k_start, "k_schedule_steps": 40 if k_start else 0},
        "data": {"synthetic": {"d": 32, "n_features": 256, "active": 4, "freq_exponent": 0.5,
                               "n_tokens": 120_000, "noise_std": 0.02}},
        "batch_size": 512, "max_tokens": 80_000, "lr_warmup_steps": 10, "lr": 1e-3,
        "val_every_steps": 10_000, "val_batches": 0, "progress_bar": False,
        "save_checkpoints": False, "out_dir": str(tmp_path),
    })
    result = train(cfg, logger=False)
    assert result.metrics["l0"] == pytest.approx(k, rel=0.1), result.metrics  # held-out rows
