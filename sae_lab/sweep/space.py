"""The sweep as Ray Tune sees it: the search space (random/grid, or Optuna's define-by-run), the
trial's values read back from a Tune config, and the check that one trial fits a node.

    param_space(sweep)           {"trial": grid over architectures, each its own nested space}
    trial_values(sweep, config)  -> (architecture, canonical key -> value)
    build_search_alg(sweep)      BasicVariantGenerator, or OptunaSearch (TPE)
"""

from __future__ import annotations

from typing import Any

from sae_lab.config import ConfigError
from sae_lab.sweep.schema import NO_OPTUNA, Param, SweepConfig


def tune_value(p: Param, as_grid: bool = False) -> Any:
    """A Param as Tune writes it: a constant, grid_search, choice, or a (log)uniform range."""
    from ray import tune

    lo_hi = p.values
    if p.kind == "constant":
        return p.values[0]
    if p.kind == "grid" or (p.kind == "choice" and as_grid):
        return tune.grid_search(list(p.values))
    if p.kind == "choice":
        return tune.choice(list(p.values))
    if p.integer:  # tune's randint/lograndint exclude the upper bound
        f = tune.lograndint if p.kind == "loguniform" else tune.randint
        return f(int(lo_hi[0]), int(lo_hi[1]) + 1)
    f = tune.loguniform if p.kind == "loguniform" else tune.uniform
    return f(float(lo_hi[0]), float(lo_hi[1]))


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune param space for random/grid search: a grid over architectures, each carrying its
    own nested space, so `num_samples` counts per architecture."""
    from ray import tune

    if sweep.search == "optuna":
        return {}
    as_grid = sweep.search == "grid"
    variants = [
        {"architecture": arch,
         "params": {k: tune_value(p, as_grid) for k, p in sweep.params[arch].items()}}
        for arch in sweep.architectures
    ]
    return {"trial": tune.grid_search(variants)}


def trial_values(sweep: SweepConfig, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(architecture, canonical key -> value) from a Tune trial config (any search algorithm)."""
    if "trial" in config:
        return config["trial"]["architecture"], dict(config["trial"]["params"])
    arch = config["architecture"]  # optuna: flat "<arch>.<key>" names, constants added here
    values = {k: p.values[0] for k, p in sweep.params[arch].items() if p.kind == "constant"}
    prefix = f"{arch}:"
    values.update({k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)})
    return arch, values


def build_search_alg(sweep: SweepConfig):
    """Tune's built-in random/grid generator, or OptunaSearch (TPE) for `optuna`."""
    if sweep.search != "optuna":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.max_concurrent)
    try:
        import optuna  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError(NO_OPTUNA) from None

    # With a define-by-run space (and an empty param_space) Tune never hands TuneConfig's
    # metric and mode to the searcher, so it gets them here.
    space = OptunaSpace(list(sweep.architectures), sweep.params)
    return OptunaSearch(space=space, metric=sweep.metric, mode=sweep.mode, seed=sweep.seed)


class OptunaSpace:
    """Define-by-run space: the architecture first, then only its own parameters, each under
    its own name so TPE models every architecture separately. A class, not a closure, because
    Tune pickles the searcher with its state."""

    def __init__(self, architectures: list[str], params: dict[str, dict[str, Param]]) -> None:
        self.architectures, self.params = architectures, params

    def __call__(self, trial: Any) -> None:
        arch = trial.suggest_categorical("architecture", self.architectures)
        for key, p in self.params[arch].items():
            name = f"{arch}:{key}"
            if p.kind in ("choice", "grid"):
                trial.suggest_categorical(name, list(p.values))
            elif p.kind != "constant" and p.integer:
                trial.suggest_int(name, p.values[0], p.values[1], log=p.kind == "loguniform")
            elif p.kind != "constant":
                trial.suggest_float(name, p.values[0], p.values[1], log=p.kind == "loguniform")


def check_resources(sweep: SweepConfig, nodes: list[dict[str, float]]) -> None:
    """Error if no single node can hold one trial (`nodes`: each alive node's resources)."""
    need = {"CPU": sweep.resources.cpus, "GPU": sweep.resources.gpus}
    names = {"CPU": "resources.cpus", "GPU": "resources.gpus"}
    for res, amount in need.items():
        if amount <= 0:
            continue
        best = max((n.get(res, 0.0) for n in nodes), default=0.0)
        if amount > best:
            total = sum(n.get(res, 0.0) for n in nodes)
            raise ConfigError(
                f"{names[res]}={amount:g} per trial, but the largest node of the cluster has "
                f"{best:g} {res} ({total:g} in total over {len(nodes)} node(s))"
            )
