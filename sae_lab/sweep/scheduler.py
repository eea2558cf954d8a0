"""Early stopping: ASHA (Li et al. 2020, arXiv 1810.05934) run separately within each architecture,
on a metric that prices sparsity (`objective` = fvu + l0_weight * l0 / d_in by default).

Why within an architecture: penalty SAEs (relu, gated, jumprelu) start dense and reach their
final L0 only as lambda takes hold, while TopK/BatchTopK sit at L0 = k from the first step. A
shared rung would rank them on how fast they converge, not on where they end up. Within one
architecture, trials differ in lambda, k, learning rate or width, and the objective compares
them at their own L0 instead of rewarding the densest.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from sae_lab.sweep.schema import CheckedSweep


def architecture_of(config: dict[str, Any]) -> str:
    """The architecture of a Tune trial config (random/grid or optuna layout)."""
    return config["trial"]["architecture"] if "trial" in config else config["architecture"]


class ArchitectureASHA(FIFOScheduler):
    """One ASHAScheduler per architecture; a trial is only ever compared with its own kind."""

    def __init__(self, **asha: Any) -> None:
        super().__init__()
        self.asha = asha
        self.groups: dict[str, ASHAScheduler] = {}
        self._metric: str | None = None
        self._mode: str | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return all(g.set_search_properties(metric, mode, **spec) for g in self.groups.values())

    def group(self, trial: Any) -> ASHAScheduler:
        arch = architecture_of(trial.config)
        if arch not in self.groups:
            sched = ASHAScheduler(**self.asha)
            sched.set_search_properties(self._metric, self._mode)
            self.groups[arch] = sched
        return self.groups[arch]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.group(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.group(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.group(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.group(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "ASHA within each architecture: " + "; ".join(
            f"{arch}: {g.debug_string()}" for arch, g in sorted(self.groups.items()))


def asha_settings(sweep: Any, checked: CheckedSweep) -> dict[str, Any]:
    """ASHAScheduler's arguments for the sweep: training tokens as the clock, rungs from
    grace_tokens and the reduction factor (used per trial here, per pack member in packs.py)."""
    return dict(
        time_attr="tokens",
        max_t=checked.max_tokens,
        grace_period=checked.grace_tokens,
        reduction_factor=sweep.scheduler.reduction_factor,
        brackets=sweep.scheduler.brackets,
    )


def build_scheduler(sweep: Any, checked: CheckedSweep) -> TrialScheduler | None:
    """ArchitectureASHA with training tokens as its clock, or None (every trial runs out).
    Metric and mode come from TuneConfig (Tune refuses them twice)."""
    if sweep.scheduler.type == "none":
        return None
    return ArchitectureASHA(**asha_settings(sweep, checked))
