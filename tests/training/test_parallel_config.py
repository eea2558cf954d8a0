"""`parallel:` in a training config, and what `sae-lab train` does with it before any process
starts (the runs themselves: tests/sae/test_sharded.py)."""

import pytest
import torch

from sae_lab.cli import main
from sae_lab.config import ConfigError
from sae_lab.training.config import TrainConfig
from sae_lab.training.launch import check
from sae_lab.training.run import TrainResult


def test_parallel_section_reads_from_yaml_and_checks_its_values(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("batch_size: 256\nparallel: {latents: 2, data: 2}\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.parallel.latents, cfg.parallel.data, cfg.parallel.world) == (2, 2, 4)
    assert TrainConfig().parallel.world == 1
    with pytest.raises(ConfigError, match="parallel.latents"):
        TrainConfig.from_dict({"parallel": {"latents": 0}})


def test_settings_a_parallel_run_cannot_take_are_refused_by_name():
    with pytest.raises(ConfigError, match="parallel.data=3 must divide batch_size=256"):
        check(TrainConfig.from_dict({"batch_size": 256, "parallel": {"data": 3}}))
    with pytest.raises(ConfigError, match="nan_policy"):
        check(TrainConfig.from_dict({"nan_policy": "skip", "parallel": {"latents": 2}}))


def test_train_command_hands_a_parallel_config_to_the_launcher(tmp_path, monkeypatch, capsys):
    import sae_lab.training.launch as launch
    from sae_lab import ARCHITECTURES, sae_config

    got = []
    sae = ARCHITECTURES["topk"](sae_config("topk", d_in=4, d_sae=8, k=2))

    def fake(cfg):
        got.append(cfg)
        return TrainResult(sae, {"fvu": 0.5}, tmp_path / "run", "rows")

    monkeypatch.setattr(launch, "train_parallel", fake)
    out_dir = f"out_dir={tmp_path / 'run'}"
    main(["train", "--set", "parallel.latents=2", "--set", out_dir])
    assert [c.parallel.latents for c in got] == [2]
    assert "fvu=0.5" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--set", "parallel.latents=2", "--set", out_dir, "--resume"])
    assert e.value.code == 2
    assert "a run with parallel set keeps no checkpoints yet" in capsys.readouterr().err
    assert len(got) == 1
    assert torch.equal(sae.b_dec, torch.zeros(4))  # untouched: nothing trained here
