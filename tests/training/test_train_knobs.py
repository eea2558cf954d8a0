"""Each training knob changes what the Lightning path does, in the direction its docstring says:
grad_clip, init_b_dec, adam_betas, aux_coef and sparsity_warmup_steps, observed on a real
`train()` run through callbacks (never by calling the module's methods by hand)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from sae_lab.training.config import TrainConfig
from sae_lab.training.run import first_batch, make_datamodule, train

B = 128


def config(tmp_path, arch: str = "topk", steps: int = 6, sae: dict | None = None,
           **over) -> TrainConfig:
    d = {
        "sae": {"architecture": arch, "expansion_factor": 4,
                **({"k": 4} if arch in ("topk", "batchtopk") else {}), **(sae or {})},
        "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 4096}},
        "batch_size": B, "max_tokens": B * steps, "lr": 1e-2, "lr_warmup_steps": 0,
        "lr_decay_start": 1.0, "val_every_steps": 1000, "val_batches": 1, "progress_bar": False,
        "save_checkpoints": False, "normalize_activations": False, "out_dir": str(tmp_path),
    }
    d.update(over)
    return TrainConfig.from_dict(d)


class StepSpy(pl.Callback):
    """After every optimiser step: the gradients the optimiser used (after clipping) and the
    parameters it produced; at the start, the parameters it started from."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.steps: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        self.dead: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        sae = pl_module.sae
        self.start = {n: p.detach().clone() for n, p in sae.named_parameters()}

        def after_step(optimizer, args, kwargs) -> None:
            self.steps.append({n: (p.grad.detach().clone(), p.detach().clone())
                               for n, p in sae.named_parameters() if p.grad is not None})

        trainer.optimizers[0].register_step_post_hook(after_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.dead.append(pl_module.sae.dead_mask.clone())  # what this step's AuxK sees

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.dead[-1] &= pl_module.sae.dead_mask  # ...and still dead: it did not fire in it


def grad_norm(grads: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> float:
    return torch.linalg.vector_norm(torch.stack([g.norm() for g, _ in grads.values()])).item()


def test_grad_clip_bounds_the_gradient_norm_the_optimiser_sees(tmp_path):
    norms = {}
    for clip in (0.0, 1e-3):
        spy = StepSpy()
        train(config(tmp_path / str(clip), grad_clip=clip), callbacks=[spy], logger=False)
        norms[clip] = [grad_norm(s) for s in spy.steps]
    assert len(norms[0.0]) == len(norms[1e-3]) == 6
    assert min(norms[0.0]) > 1e-2  # unclipped gradients are far above the bound...
    assert max(norms[1e-3]) <= 1e-3 * (1 + 1e-4)  # ...and clipping holds every step to it
    assert max(norms[1e-3]) >= 1e-3 * (1 - 1e-4)


def test_init_b_dec_starts_at_the_geometric_median_of_the_first_batch(tmp_path):
    cfg = config(tmp_path / "on", arch="relu")
    x = first_batch(make_datamodule(cfg)).double()  # [B, d]: the rows train() initialises from
    x = x * x.shape[1] ** 0.5 / x.norm(dim=1, keepdim=True).clamp_min(1e-6)  # relu's token_norm
    starts = {}
    for flag in (True, False):
        spy = StepSpy()
        train(config(tmp_path / str(flag), arch="relu", init_b_dec=flag), callbacks=[spy],
              logger=False)
        starts[flag] = spy.start["b_dec"].double()
    assert torch.equal(starts[False], torch.zeros_like(starts[False]))
    m = starts[True]
    # The geometric median minimises sum_i ||x_i - m||: its gradient, the sum of unit vectors
    # from the rows to m, vanishes there, and is large at the mean of these skewed rows.
    def pull(c: torch.Tensor) -> float:
        return ((c - x) / (c - x).norm(dim=1, keepdim=True)).sum(0).norm().item()

    assert pull(m) < 1e-2 * B
    assert pull(x.mean(0)) > 10 * pull(m)
    assert (m - x.mean(0)).norm() > 0.05 * x.mean(0).norm()


def hand_adam(p0, grads, lr, betas, eps=1e-8):
    """PyTorch's Adam (no weight decay, no amsgrad), written out."""
    b1, b2 = betas
    p, m, v = p0.double().clone(), torch.zeros_like(p0, dtype=torch.float64), 0
    v = torch.zeros_like(m)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    return p


def test_adam_betas_set_the_trajectory_a_hand_adam_step_predicts(tmp_path):
    betas = (0.5, 0.75)
    spy = StepSpy()
    cfg = config(tmp_path, steps=3, grad_clip=0.0, adam_betas=list(betas))
    train(cfg, callbacks=[spy], logger=False)
    name = "b_enc"  # a bias: nothing but Adam changes it (the decoder is renormalised)
    grads = [s[name][0] for s in spy.steps]
    got = spy.steps[-1][name][1].double()
    torch.testing.assert_close(got, hand_adam(spy.start[name], grads, cfg.lr, betas),
                               rtol=1e-5, atol=1e-6)
    default = hand_adam(spy.start[name], grads, cfg.lr, (0.9, 0.999))
    assert (got - default).abs().max() > 1e-3  # the betas matter at this step


# Settings that leave latents dead within a few steps: TopK never selects most of them;
# JumpReLU thresholds far above the pre-activations; a gated SAE's gates shut (ShutGates).
DEAD_MAKERS = {"topk": {"k": 2}, "gated": {},
               "jumprelu": {"threshold_init": 3.0, "preact_coef": 0.0}}


class ShutGates(pl.Callback):
    """Half of a gated SAE's gates shut for good at the start: b_gate = -100."""

    def on_train_start(self, trainer, pl_module) -> None:
        with torch.no_grad():
            pl_module.sae.b_gate[::2] = -100.0


@pytest.mark.parametrize("arch", sorted(DEAD_MAKERS))
def test_aux_coef_gives_dead_latents_encoder_gradients(arch, tmp_path):
    """A dead latent gets no gradient from the main path (TopK never selects it, a shut gate or
    a JumpReLU below threshold passes none), so only AuxK (aux_coef > 0) sends it one."""
    dead_grads = {}
    for coef in (0.0, 0.5):
        spy = StepSpy()
        cfg = config(tmp_path / str(coef), arch=arch, steps=8, grad_clip=0.0,
                     sae={**DEAD_MAKERS[arch], "dead_tokens": 2 * B, "aux_coef": coef})
        train(cfg, callbacks=[spy] + ([ShutGates()] if arch == "gated" else []), logger=False)
        per_step = []
        for dead, step in zip(spy.dead, spy.steps, strict=True):
            if dead.any():
                per_step.append(step["W_enc"][0][:, dead].abs().max().item())
        assert per_step, "no latent went dead; the test needs some"
        dead_grads[coef] = max(per_step)
    assert dead_grads[0.0] == 0.0
    assert dead_grads[0.5] > 1e-4


def test_preact_loss_lowers_the_thresholds_of_dead_jumprelu_latents(tmp_path):
    """Thresholds far above every pre-activation: the L0 estimator's kernel holds no entry and
    AuxK moves only pre, so without the pre-activation loss a dead latent's threshold stays put
    (the known-answer family's JumpReLU had 34% dead); with it, every dead threshold comes down."""
    moved = {}
    for coef in (0.0, 0.1):
        spy = StepSpy()
        sae = {**DEAD_MAKERS["jumprelu"], "threshold_init": 30.0, "dead_tokens": 2 * B,
               "preact_coef": coef}
        train(config(tmp_path / str(coef), arch="jumprelu", steps=8, grad_clip=0.0, sae=sae),
              callbacks=[spy], logger=False)
        start = spy.start["log_threshold"]
        end = spy.steps[-1]["log_threshold"][1]
        assert spy.dead[-1].all()
        moved[coef] = (end - start)
    assert (moved[0.0] == 0).all()
    assert (moved[0.1] < 0).all()


def test_sparsity_warmup_scales_the_sparsity_term_by_step_over_warmup(tmp_path, monkeypatch):
    from sae_lab.sae.relu import ReLUSAE

    seen = []
    original = ReLUSAE.training_loss

    def spy(self, x, step, sparsity_scale=1.0):
        out = original(self, x, step, sparsity_scale)
        seen.append((step, out.loss.item(), out.parts, self.cfg.lam))
        return out

    monkeypatch.setattr(ReLUSAE, "training_loss", spy)
    train(config(tmp_path, arch="relu", steps=6, sparsity_warmup_steps=4), logger=False)
    assert [s for s, *_ in seen] == list(range(6))
    for step, loss, parts, lam in seen:
        recon, sparsity = parts["mse"].item() * 16, parts["sparsity"].item()
        assert sparsity > 0
        scale = min(1.0, step / 4)
        assert loss == pytest.approx(recon + scale * lam * sparsity, rel=1e-5), step
