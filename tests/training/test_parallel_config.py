"""`parallel:` in a training config, what `sae-lab train` does with it before any process starts
(the runs themselves: tests/sae/test_sharded.py), and the step parallel runs take against the
Lightning step of one-process runs."""

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
    assert (cfg.parallel.latents, cfg.parallel.data, cfg.parallel.ranks) == (2, 2, 4)
    assert TrainConfig().parallel.ranks == 1
    with pytest.raises(ConfigError, match="parallel.latents"):
        TrainConfig.from_dict({"parallel": {"latents": 0}})


def test_settings_a_parallel_run_cannot_take_are_refused_by_name():
    with pytest.raises(ConfigError, match="nan_policy"):
        check(TrainConfig.from_dict({"nan_policy": "skip", "parallel": {"latents": 2}}))


def test_one_process_training_refuses_a_parallel_config():
    from sae_lab.training.run import train

    with pytest.raises(ConfigError, match="parallel: latents=2 x data=1 runs through"):
        train(TrainConfig.from_dict({"parallel": {"latents": 2}}))


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


def test_the_parallel_step_is_the_lightning_step():
    """training.parallel.train_step, which parallel runs take, against SAEModule under the
    Lightning trainer that one-process runs take: the same SAE after the same steps (with the
    learning-rate schedule, sparsity warm-up and gradient clipping active)."""
    import pytorch_lightning as pl

    from sae_lab.training.optim import optimizer
    from sae_lab.training.parallel import train_step
    from sae_lab.training.run import build_module, first_batch, make_datamodule

    cfg = TrainConfig.from_dict({
        "sae": {"architecture": "jumprelu", "expansion_factor": 4},
        "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 2048}},
        "batch_size": 64, "max_tokens": 64 * 8, "lr": 3e-3, "lr_warmup_steps": 2,
        "lr_decay_start": 0.5, "sparsity_warmup_steps": 3, "grad_clip": 0.5,
        "val_every_steps": 1000, "loggers": [], "progress_bar": False,
    })
    runs = []
    for lightning in (True, False):
        dm = make_datamodule(cfg)
        pl.seed_everything(cfg.seed, verbose=False)
        module = build_module(cfg, dm)
        module.initialise(first_batch(dm))
        if lightning:
            trainer = pl.Trainer(max_steps=cfg.max_steps, gradient_clip_val=cfg.grad_clip,
                                 logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False,
                                 limit_val_batches=0, accelerator="cpu")
            trainer.fit(module, train_dataloaders=dm.train_dataloader())
        else:
            opt, sched = optimizer(module.sae, cfg)
            for step, batch in zip(range(cfg.max_steps), dm.train_dataloader(), strict=False):
                x = module.sae.normalize_input(module._scaled(batch))
                train_step(module.sae, opt, sched, x, step, cfg)
        runs.append(module.sae.state_dict())
    for name, t in runs[0].items():
        torch.testing.assert_close(runs[1][name], t, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(runs[0]["W_enc"], build_module(cfg, dm).sae.W_enc)  # it trained
