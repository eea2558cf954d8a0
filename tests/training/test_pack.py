"""Packs: N SAEs from one data stream, each as if trained alone."""


import pytest
import pytorch_lightning as pl
import torch
import yaml

from sae_lab.training.config import TrainConfig
from sae_lab.training.pack import train_pack
from sae_lab.training.run import train

BASE = {
    "data": {"synthetic": {"d": 16, "n_features": 32, "active": 3, "n_tokens": 4096}},
    "batch_size": 128,
    "max_tokens": 128 * 12,
    "lr_warmup_steps": 3,
    "val_every_steps": 6,
    "val_batches": 2,
    "log_every_steps": 4,
    "progress_bar": False,
}
# Three architectures, different k / lambda / lr / expansion / schedules.
MEMBERS = {
    "relu": {"sae": {"architecture": "relu", "sparsity_coef": 3.0, "expansion_factor": 2},
             "lr": 1e-3, "sparsity_warmup_steps": 4},
    "topk": {"sae": {"architecture": "topk", "k": 4, "expansion_factor": 4}, "lr": 2e-3},
    "jumprelu": {"sae": {"architecture": "jumprelu", "expansion_factor": 3}, "lr": 5e-4,
                 "lr_decay_start": 0.5},
}


def member_cfgs(tmp_path, dtype="float64", **over):
    cfgs = []
    for name, own in MEMBERS.items():
        d = yaml.safe_load(yaml.safe_dump({**BASE, **own, **over}))
        d["sae"]["dtype"] = dtype
        d["out_dir"] = str(tmp_path / name)
        cfgs.append(TrainConfig.from_dict(d))
    return cfgs


class Crash(pl.Callback):
    """The pack's process dies after step 9 (its last checkpoint: the validation at step 6)."""

    def on_train_batch_end(self, trainer, *_):
        if trainer.global_step == 9:
            raise RuntimeError("killed")


def assert_same_runs(alone, packed, tol):
    for a, p in zip(alone, packed, strict=True):
        assert p.status == "done"
        sa, sp = a.sae.state_dict(), p.sae.state_dict()
        assert sa.keys() == sp.keys()
        for k in sa:
            assert torch.allclose(sa[k].double(), sp[k].double(), rtol=0, atol=tol), (p.name, k)
        for k in ("fvu", "mse", "l0", "l1", "dead_frac", "tokens"):
            assert a.metrics[k] == pytest.approx(p.metrics[k], abs=tol, rel=0), (p.name, k)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 1e-5)])
def test_pack_of_three_architectures_equals_each_run_alone(tmp_path, dtype, tol):
    cfgs = member_cfgs(tmp_path, dtype)
    alone = [train(c, logger=False, progress_lines=False) for c in cfgs]
    # float32: members placed by device string (the path that puts them on several GPUs; here
    # all on the CPU, so it must change nothing)
    devices = ["cpu", "cpu", None] if dtype == "float32" else None
    packed = train_pack(cfgs, list(MEMBERS), tmp_path / "pack", logger=False,
                        save_checkpoints=False, devices=devices)
    assert_same_runs(alone, packed, tol)
    # the members really trained (and differ): not three copies of the initial weights
    assert packed[0].metrics["fvu"] < 1 and packed[1].metrics["l0"] <= 4
    if dtype == "float32":
        return
    # A pack that dies is retried from its checkpoint: every member continues as if never
    # stopped (weights, Adam state, schedules, dead counters, stream position).
    out = tmp_path / "retried"
    with pytest.raises(RuntimeError, match="killed"):
        train_pack(cfgs, list(MEMBERS), out, callbacks=[Crash()], logger=False)
    retried = train_pack(cfgs, list(MEMBERS), out, logger=False,
                         ckpt_path=out / "checkpoints" / "last.ckpt")
    assert_same_runs(alone, retried, tol)


# --- early stopping per member, across packs (no Ray needed) -------------------------------

ASHA = {"time_attr": "tokens", "max_t": 800, "grace_period": 100, "reduction_factor": 2,
        "brackets": 1}  # rungs at 100, 200, 400 tokens


def test_members_stop_at_the_right_rung_across_packs_within_their_architecture(tmp_path):
    from sae_lab.sweep.packs import MemberRungs

    rungs = MemberRungs(ASHA, "objective", "min", str(tmp_path / "rungs.jsonl"))
    arch = {"relu_a": "relu", "topk_a": "topk", "relu_b": "relu", "topk_b": "topk",
            "relu_c": "relu"}  # pack A: *_a; pack B: *_b, relu_c
    # (member, tokens, objective) in the order the two packs report
    reports = [
        ("relu_a", 100, 0.5), ("relu_b", 100, 0.3),
        ("topk_a", 100, 0.9),  # worse than every relu so far, but the first topk: goes on
        ("topk_b", 100, 0.1),
        ("relu_c", 100, 0.7),  # median of relu_a (pack A) and relu_b (pack B) is 0.4: stop
        ("relu_b", 200, 0.2),
        ("relu_a", 200, 0.45),  # pack A's member, beaten by pack B's relu_b at rung 200: stop
        ("topk_b", 200, 0.05),
        ("topk_a", 200, 0.8),  # stop
        ("topk_b", 300, 0.04),  # between rungs: nothing to compare
    ]
    answers = {(m, t): rungs.report(m, arch[m], {"tokens": t, "objective": o})
               for m, t, o in reports}
    assert rungs.stopped() == {"relu_c": 100.0, "relu_a": 200.0, "topk_a": 200.0}
    assert answers[("topk_a", 100)] and answers[("topk_b", 300)]
    # A pack retried from its checkpoint repeats a report: the same answer, nothing recorded
    assert not rungs.report("relu_a", "relu", {"tokens": 200, "objective": 0.01})
    # A resumed sweep (new actor) replays the log and knows every rung
    again = MemberRungs(ASHA, "objective", "min", str(tmp_path / "rungs.jsonl"))
    assert again.stopped() == rungs.stopped()
    assert not again.report("relu_d", "relu", {"tokens": 100, "objective": 0.6})


def test_packs_group_configs_by_data_stream():
    from sae_lab.sweep.packs import expand, make_packs
    from sae_lab.sweep.schema import sweep_from_dict

    d = {"base": {**BASE, "sae": {"expansion_factor": 2}},
         "architectures": ["relu", "topk", "batchtopk"],
         "space": {"relu": {"sparsity_coef": {"grid": [1.0, 2.0, 4.0]}},
                   "topk": {"k": {"grid": [2, 4, 8]}, "batch_size": {"grid": [128, 64]}},
                   "batchtopk": {"k": {"grid": [2, 4, 8]}}},
         "pack": 4, "search": "grid"}
    sweep = sweep_from_dict(d)
    members = expand(sweep)
    assert len(members) == 3 + 6 + 3 and len({m.name for m in members}) == 12
    packs = make_packs(sweep)
    assert sorted(len(p) for p in packs) == [1, 3, 4, 4]  # 9 at batch 128 (4+4+1), 3 at 64
    for p in packs:
        assert len({sweep.train_config(m.architecture, m.values).batch_size for m in p}) == 1
    from sae_lab.training.pack import spread

    assert spread(5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert spread(3, 1) == [None] * 3
    auto = sweep_from_dict({**d, "pack": "auto"})
    assert sorted(len(p) for p in make_packs(auto, slots=2)) == [1, 2, 4, 5]



class StopAtStep3(pl.Callback):
    """Early stopping stops member 0 (relu) at step 3, before the checkpoint at step 6."""

    def on_train_batch_end(self, trainer, pack, *_):
        if trainer.global_step == 3:
            pack.stop(0)


def test_pack_checkpoint_keeps_adam_moments_of_running_members_only(tmp_path):
    """A stopped member takes no more steps: the checkpoint holds its weights, not its Adam
    moments; the pack resumes from it (resumes in general are exact: the test above)."""
    from sae_lab.sweep.packs import SlimCheckpoint

    cfgs, names = member_cfgs(tmp_path), list(MEMBERS)
    out = tmp_path / "retried"
    with pytest.raises(RuntimeError, match="killed"):
        train_pack(cfgs, names, out, callbacks=[StopAtStep3(), SlimCheckpoint(), Crash()],
                   logger=False)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["pack"]["status"] == ["stopped", "running", "running"]
    # The optimiser numbers parameters member after member, each in its parameter order.
    weights = ckpt["state_dict"]
    counts = [sum(k.startswith(f"members.{i}.sae.") and weights[k].is_floating_point()
                  and weights[k].dim() > 0 and not k.endswith("tokens_since_fired")
                  for k in weights) for i in range(3)]
    first = [sum(counts[:i]) for i in range(3)]
    owner = {j: i for i in range(3) for j in range(first[i], first[i] + counts[i])}
    opt = ckpt["optimizer_states"][0]
    assert sorted(p for g in opt["param_groups"] for p in g["params"]) == sorted(owner)
    assert {owner[j] for j in opt["state"]} == {1, 2}
    assert {j for j in owner if owner[j] > 0} == set(opt["state"])
    resumed = train_pack(cfgs, names, out, logger=False,
                         ckpt_path=out / "checkpoints" / "last.ckpt")
    assert [r.status for r in resumed] == ["stopped", "done", "done"]
    assert resumed[1].metrics["tokens"] == 128 * 12 and resumed[0].metrics["tokens"] == 128 * 3
    # the stopped member took no step after the checkpoint (the resumed run's last one)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(last["state_dict"]["members.0.sae.W_enc"], weights["members.0.sae.W_enc"])
    assert not torch.equal(last["state_dict"]["members.1.sae.W_enc"],
                           weights["members.1.sae.W_enc"])
