"""Packed sweeps: the search's configs drawn up front, grouped by data stream into packs, a pack per
Tune trial, early stopping per member across all packs.

    sweep (pack: N | auto) --expand--> members (architecture, values)
        --group by stream_key, chunk--> packs --Tune grid, one trial each-->
        run_pack: train_pack(members) --every validation--> MemberRungs (a Ray actor):
            ASHA within each architecture, over the members of every pack --> stop / go on
        --checkpoint: trainer.ckpt (every member's weights; Adam's moments of the running ones)
          + members.json; final: members/<name>/sae (each SAE saved once, in the last checkpoint)

The rule is ArchitectureASHA's (sae_lab.sweep.scheduler), applied to members instead of trials:
the same objective, the same rungs (grace_tokens times powers of the reduction factor), one
ASHA per architecture. The actor appends every report to rungs.jsonl under the sweep's output
directory and replays it when a resumed sweep starts it again, so a member is judged against
every member that reached its rung before, whichever pack it ran in.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl

from sae_lab.files import atomic_write_json
from sae_lab.sweep.report import MEMBERS_FILE
from sae_lab.sweep.scheduler import ArchitectureASHA, asha_settings
from sae_lab.sweep.schema import CheckedSweep, SweepConfig, sweep_from_dict
from sae_lab.sweep.space import build_search_alg, param_space
from sae_lab.training.metrics import VAL_METRICS, objective
from sae_lab.training.pack import RUNNING, STOPPED, PackModule, stream_key

TRAINER_CKPT = "trainer.ckpt"
RUNGS_FILE = "rungs.jsonl"


@dataclass
class Member:
    """One SAE of a packed sweep."""

    name: str
    """<architecture>_<index>, unique in the sweep (its results.csv `trial`)."""
    architecture: str
    values: dict[str, Any]
    """Canonical key -> drawn value (as a Tune trial's params)."""


def expand(sweep: SweepConfig) -> list[Member]:
    """Every config the random/grid search would run (num_samples per architecture), drawn with
    the sweep's seed, in a fixed order."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    space = param_space(sweep)
    rng = np.random.RandomState(sweep.seed)
    members: list[Member] = []
    for _ in range(sweep.num_samples):
        for _, spec in generate_variants(space, random_state=rng):
            trial = spec["trial"]
            arch = trial["architecture"]
            members.append(Member(f"{arch}_{len(members):03d}", arch, dict(trial["params"])))
    return members


def make_packs(sweep: SweepConfig, slots: int = 1, memory_bytes: float = 0) -> list[list[Member]]:
    """The sweep's members grouped by data stream, each group cut into packs of `sweep.pack`
    (auto: `slots` packs per group, more when a pack's estimated memory exceeds memory_bytes)."""
    groups: dict[str, list[Member]] = {}
    for m in expand(sweep):
        groups.setdefault(stream_key(sweep.train_config(m.architecture, m.values)), []).append(m)
    packs = []
    for members in groups.values():
        if sweep.pack == "auto":
            need = sum(member_bytes(sweep, m) for m in members)
            n = max(min(slots, len(members)), math.ceil(need / memory_bytes) if memory_bytes else 1)
            size = math.ceil(len(members) / n)
        else:
            size = sweep.pack
        # interleave architectures so that each pack holds a mix (and ASHA sees every kind early)
        members = sorted(members, key=lambda m: (int(m.name.rsplit("_", 1)[1]) % size, m.name))
        packs += [members[i : i + size] for i in range(0, len(members), size)]
    return packs


def member_bytes(sweep: SweepConfig, m: Member) -> float:
    """Training memory of one member: weights, gradients and two Adam moments, plus ~4
    [batch, d_sae] activations (pre-activations, codes and their gradients)."""
    cfg = sweep.train_config(m.architecture, m.values)
    d_in = stream_d_in(cfg) or 1024
    sae = cfg.sae.with_d_in(d_in)
    d_sae = sae.d_sae or sae.expansion_factor * d_in
    size = 2 if sae.dtype in ("bfloat16", "float16") else 8 if sae.dtype == "float64" else 4
    return size * (4 * (2 * d_in * d_sae + d_sae + d_in) + 4 * cfg.batch_size * d_sae)


def stream_d_in(cfg: Any) -> int | None:
    """Width of the data's activations, from a shard manifest, the live model's config (the
    residual stream: its hidden size) or sae.d_in (shards not harvested yet)."""
    from sae_lab.config import ConfigError
    from sae_lab.data.config import data_d_in

    try:
        d_in = data_d_in(cfg.data)
    except ConfigError:
        if not cfg.sae.d_in:
            raise
        return cfg.sae.d_in
    if d_in is None and cfg.data.live is not None:
        from transformers import AutoConfig

        from sae_lab.lm.load import resolve_model

        live = cfg.data.live
        d_in = AutoConfig.from_pretrained(resolve_model(live.model), revision=live.revision,
                                          trust_remote_code=live.trust_remote_code).hidden_size
    return d_in or cfg.sae.d_in


def pack_space(packs: list[list[Member]]) -> dict[str, Any]:
    """Tune param space: a grid over the packs, one trial each."""
    from ray import tune

    return {"pack": tune.grid_search([
        {"id": f"pack{i:03d}", "members": [vars(m) for m in pack]}
        for i, pack in enumerate(packs)])}


# --- early stopping per member, across packs --------------------------------------------------


class MemberRungs:
    """ArchitectureASHA over pack members: `report` is Tune's on_trial_result for one member.
    Reports are logged to `path` (JSON lines) and replayed on construction; a report repeated
    (a pack retried from its checkpoint) gets the answer it got the first time."""

    def __init__(self, asha: dict[str, Any], metric: str, mode: str,
                 path: str | None = None) -> None:
        self.scheduler = ArchitectureASHA(**asha)
        self.scheduler.set_search_properties(metric, mode)
        self.members: dict[str, SimpleNamespace] = {}
        self.answers: dict[tuple[str, float, bool], bool] = {}
        self.path = path
        if path and Path(path).is_file():
            for line in Path(path).read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a killed driver
                    continue
                self._decide(r["member"], r["architecture"], r["result"], r["final"])

    def report(self, member: str, architecture: str, result: dict[str, Any],
               final: bool = False) -> bool:
        """True: the member goes on; False: stop it. `final`: it finished (recorded only)."""
        key = (member, float(result["tokens"]), final)
        if key in self.answers:
            return self.answers[key]
        go_on = self._decide(member, architecture, result, final)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"member": member, "architecture": architecture,
                                    "result": result, "final": final}) + "\n")
        return go_on

    def _decide(self, member: str, architecture: str, result: dict[str, Any],
                final: bool) -> bool:
        key = (member, float(result["tokens"]), final)
        if key in self.answers:
            return self.answers[key]
        trial = self.members.get(member)
        if trial is None:
            trial = SimpleNamespace(trial_id=member, config={"architecture": architecture})
            self.members[member] = trial
            self.scheduler.on_trial_add(None, trial)
        if final:
            self.scheduler.on_trial_complete(None, trial, result)
            go_on = False
        else:
            go_on = self.scheduler.on_trial_result(None, trial, result) == "CONTINUE"
        self.answers[key] = go_on
        return go_on

    def stopped(self) -> dict[str, float]:
        """Members stopped early -> tokens at which they were stopped."""
        return {m: t for (m, t, final), go in self.answers.items() if not go and not final}


def start_rungs(sweep: SweepConfig, checked: CheckedSweep, out: Path) -> tuple[Any, str | None]:
    """(actor, its name): the sweep's MemberRungs as a named Ray actor replaying OUT/rungs.jsonl;
    (None, None) when the sweep has no early stopping. The name is new for every launch (the
    trainable is handed it again on resume)."""
    import ray

    if sweep.scheduler.type == "none":
        return None, None
    name = f"sae_lab_rungs_{os.getpid()}_{time.time_ns()}"
    actor = ray.remote(num_cpus=0)(MemberRungs).options(name=name).remote(
        asha_settings(sweep, checked), sweep.metric, sweep.mode, str(out / RUNGS_FILE))
    return actor, name


# --- the Tune trainable -----------------------------------------------------------------------


class SlimCheckpoint(pl.Callback):
    """Pack checkpoints hold Adam's two moments only for members still running: a member that
    stopped (early stopping) or failed takes no more steps, so its weights are all its final SAE
    needs (a third of its bytes with the moments, at float32)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pack: PackModule,
                           checkpoint: dict[str, Any]) -> None:
        drop_idle_moments(checkpoint, pack)


def drop_idle_moments(checkpoint: dict[str, Any], pack: PackModule) -> None:
    """Remove from a Lightning checkpoint the optimiser state of every member not running.
    Adam keeps state per parameter, so a resumed pack simply has none for them (and never
    needs it: they take no step)."""
    states = checkpoint.get("optimizer_states")
    if not states:
        return
    state, groups = states[0]["state"], states[0]["param_groups"]
    for i in range(len(pack.members)):
        if pack.status[i] == RUNNING:
            continue
        for g in pack._groups[i]:  # the member's parameter groups in the pack's one optimiser
            for index in groups[g]["params"]:
                state.pop(index, None)


class PackReport(SlimCheckpoint):
    """At the end of every validation: each running member's metrics to the rungs (stopping the
    members they stop), then `tune.report` with a checkpoint of the whole pack."""

    def __init__(self, sweep: SweepConfig, members: list[dict[str, Any]], rungs: Any,
                 info: dict[str, Any], restored: dict[str, Any] | None = None) -> None:
        self.sweep, self.members, self.rungs, self.info = sweep, members, rungs, info
        self.state: dict[str, Any] = restored or {
            "tokens": -1.0, "wall_time_s": 0.0, "final": False,
            "members": {m["name"]: {"architecture": m["architecture"], "status": RUNNING,
                                    "error": "", "metrics": {}} for m in members}}
        self.wall_start = time.monotonic() - self.state["wall_time_s"]

    def metrics(self, val: dict[str, float], d_in: int, final: bool = False) -> dict[str, Any]:
        m = {"objective": objective(float(val["fvu"]), float(val["l0"]), d_in,
                                    self.sweep.objective.l0_weight)}
        m.update({k: float(val[k]) for k in VAL_METRICS})
        m["tokens"] = float(val["tokens"])
        m["val_tokens"] = float(val.get("val_tokens", 0.0))
        m["final"] = float(final)
        m["wall_time_s"] = time.monotonic() - self.wall_start
        return m

    def _go_on(self, name: str, arch: str, metrics: dict[str, Any], final: bool = False) -> bool:
        if self.rungs is None:
            return True
        import ray

        return ray.get(self.rungs.report.remote(name, arch, metrics, final))

    def on_validation_end(self, trainer: pl.Trainer, pack: PackModule) -> None:
        tokens = float(trainer.global_step * pack.cfg.batch_size)
        if trainer.sanity_checking or tokens <= self.state["tokens"]:
            return
        for i in pack.running():
            name, val = pack.names[i], pack.val_metrics[i]
            if val.get("tokens") != tokens:
                continue
            arch = self.state["members"][name]["architecture"]
            metrics = self.metrics(val, pack.members[i].sae.d_in)
            self.state["members"][name]["metrics"] = metrics
            # at max_tokens ASHA says stop to everyone: the member is done, not stopped early
            if tokens < pack.cfg.max_steps * pack.cfg.batch_size and \
                    not self._go_on(name, arch, metrics):
                pack.stop(i)
        self._sync_status(pack)
        self.state["wandb_ids"] = pack.wandb_ids  # a resumed pack continues these W&B runs
        self.state["tokens"] = tokens
        self.state["wall_time_s"] = time.monotonic() - self.wall_start
        with tempfile.TemporaryDirectory(prefix="sae_lab_pack_") as tmp:
            trainer.save_checkpoint(Path(tmp) / TRAINER_CKPT, weights_only=False)
            atomic_write_json(Path(tmp) / MEMBERS_FILE, self.state)
            self._report(tmp)

    def _sync_status(self, pack: PackModule) -> None:
        for i, name in enumerate(pack.names):
            own = self.state["members"][name]
            own["status"], own["error"] = pack.status[i], pack.errors[i]

    def final(self, results: list[Any]) -> None:
        """Every member's final metrics (whole held-out set) and SAE, in one last report."""
        with tempfile.TemporaryDirectory(prefix="sae_lab_pack_") as tmp:
            for r in results:
                own = self.state["members"][r.name]
                own["status"], own["error"] = r.status, r.error
                if r.sae is None:
                    continue
                own["metrics"] = self.metrics(r.metrics, r.sae.d_in, final=True)
                if r.status != STOPPED:  # a stopped member's rung result is already recorded
                    self._go_on(r.name, own["architecture"], own["metrics"], final=True)
                r.sae.metadata["sweep"] = {**own["metrics"], "member": r.name}
                r.sae.save(Path(tmp) / "members" / r.name / "sae")
            self.state["final"] = True
            self.state["wall_time_s"] = time.monotonic() - self.wall_start
            atomic_write_json(Path(tmp) / MEMBERS_FILE, self.state)
            self._report(tmp)

    def _report(self, directory: str) -> None:
        from ray import tune

        done = [m for m in self.state["members"].values() if m["metrics"]]
        best = min((m["metrics"]["objective"] for m in done), default=math.nan)
        running = sum(m["status"] == RUNNING for m in self.state["members"].values())
        tune.report({"objective": best, "tokens": self.state["tokens"], "running": running,
                     "final": float(self.state["final"]), **self.info},
                    checkpoint=tune.Checkpoint.from_directory(directory))


def run_pack(config: dict[str, Any], sweep: dict[str, Any], rungs: str | None) -> None:
    """Tune trainable: train one pack, resuming from Tune's checkpoint when there is one."""
    import ray
    import torch
    from ray import tune

    from sae_lab.sweep.trial import TrialError, quiet_trial
    from sae_lab.training.pack import train_pack

    quiet_trial()
    spec = sweep_from_dict(sweep)
    members = config["pack"]["members"]
    names = [m["name"] for m in members]
    cfgs = []
    for m in members:
        cfg = spec.train_config(m["architecture"], m["values"])
        cfg.val_batches = 0  # every report is ranked: measure it on the whole held-out set
        cfgs.append(cfg)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    info = {"pack": config["pack"]["id"], "node": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname()}
    actor = ray.get_actor(rungs) if rungs else None
    ckpt_path, restored = None, None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        local = Path(checkpoint.to_directory())
        restored = json.loads((local / MEMBERS_FILE).read_text())
        if restored["final"]:  # finished before the driver saved that it had
            tune.report({"final": 1.0, "tokens": restored["tokens"], **info},
                        checkpoint=checkpoint)
            return
        ckpt_path = local / TRAINER_CKPT
    report = PackReport(spec, members, actor, info, restored)
    try:
        # Tune keeps the checkpoints, and the final SAEs go into the last one (report.final)
        # The W&B run ids travel in the checkpoint: a resumed sweep's trials work in new folders.
        results = train_pack(cfgs, names, os.getcwd(), callbacks=[report], ckpt_path=ckpt_path,
                             save_checkpoints=False, save_final=False,
                             wandb_ids=(restored or {}).get("wandb_ids"))
    except Exception as e:  # Tune retries the pack from its checkpoint
        raise TrialError(f"{type(e).__name__}: {e} (pack {info['pack']} on host "
                         f"{info['hostname']})") from e
    report.final(results)


# --- packs as Tune trials ----------------------------------------------------------------------


def pack_trials(sweep: SweepConfig, checked: CheckedSweep, out: Path,
                nodes: list[dict[str, Any]]) -> tuple[Any, ...]:
    """(trainable, param space, TuneConfig, rungs actor): a Tune trial per pack, and the actor
    that holds the rungs of every member (held until the sweep ends)."""
    from ray import tune

    rungs, name = start_rungs(sweep, checked, out)
    trainable = tune.with_parameters(run_pack, sweep=sweep.to_dict(), rungs=name)
    space = pack_space(make_packs(sweep, trial_slots(sweep, nodes), memory_budget(sweep)))
    resources = {"cpu": sweep.resources.cpus, "gpu": sweep.resources.gpus}
    return tune.with_resources(trainable, resources), space, _pack_tune_config(sweep), rungs


def local_packs(sweep: SweepConfig) -> int:
    """Packs the sweep makes on this machine."""
    import torch

    here = [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]
    return len(make_packs(sweep, trial_slots(sweep, here), memory_budget(sweep)))


def _pack_tune_config(sweep: SweepConfig):
    """Packs: no Tune scheduler (members are stopped by the rungs actor, not whole packs)."""
    from ray import tune

    return tune.TuneConfig(
        search_alg=build_search_alg(sweep), num_samples=1, reuse_actors=sweep.reuse_actors,
        trial_name_creator=pack_name, trial_dirname_creator=pack_name,
    )


def pack_name(trial: Any) -> str:
    return trial.config["pack"]["id"]


def trial_slots(sweep: SweepConfig, nodes: list[dict[str, float]]) -> int:
    """Trials the cluster runs at once: by GPUs when trials take GPUs, else by CPUs."""
    limits = [sum(n.get("CPU", 0.0) for n in nodes) // sweep.resources.cpus]
    if sweep.resources.gpus:
        limits.append(sum(n.get("GPU", 0.0) for n in nodes) // sweep.resources.gpus)
    if sweep.max_concurrent:
        limits.append(sweep.max_concurrent)
    return max(1, int(min(limits)))


def memory_budget(sweep: SweepConfig, gpu_memory: float | None = None) -> float:
    """Bytes one pack may use: half of one GPU's memory (trials on GPUs; `gpu_memory` bytes, else
    this machine's first GPU) or of this machine's RAM; 0 when unknown."""
    import torch

    if sweep.resources.gpus and (gpu_memory or torch.cuda.is_available()):
        gpu = gpu_memory or torch.cuda.get_device_properties(0).total_memory
        return 0.5 * gpu * min(1.0, sweep.resources.gpus)
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0.0
