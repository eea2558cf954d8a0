"""The sweep YAML: its schema (SweepConfig), parsing (`load_sweep`) and validation against the
data (`validate` -> CheckedSweep). The Ray Tune and Optuna spaces are built from it in space.py.

    name: demo
    base: {...}                       # a TrainConfig; every trial starts from it
    architectures: [relu, topk, jumprelu]
    space:                            # per architecture; `all` applies to every one
      all:  {lr: {loguniform: [1.0e-4, 3.0e-3]}}
      relu: {sparsity_coef: {loguniform: [1, 20]}}
      topk: {k: {grid: [8, 16, 32]}, expansion_factor: {choice: [4, 8]}}
    num_samples: 2                    # per architecture; a grid is repeated this often
    metric: objective                 # objective = fvu + l0_weight * l0 / d_in (see `objective`)
    ...

A parameter is a constant, or one of {loguniform: [lo, hi]}, {uniform: [lo, hi]},
{choice: [...]} or {grid: [...]}. Integer fields (k, expansion_factor, ...) draw integers from
[lo, hi] inclusive. Keys are TrainConfig fields (`lr`, `batch_size`, `data.synthetic.seed`);
SAEConfig fields may drop their `sae.` prefix (`k` means `sae.k`).

Everything is checked before a trial starts: each architecture's TrainConfig is built at every
corner of its space (range ends, every listed value) against the data's d_in.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import itertools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag

from sae_lab.bench.run import BenchConfig, metric_names
from sae_lab.config import (
    ConfigError,
    TypeName,
    apply_overrides,
    config,
    load_yaml,
    parse,
    register_tags,
    require,
    to_dict,
)
from sae_lab.data.config import data_d_in
from sae_lab.sae import CONFIGS, TopKConfig
from sae_lab.sae.config import searchable
from sae_lab.training.config import TrainConfig, WandbConfig
from sae_lab.training.metric_names import OBJECTIVE, SWEEP_METRICS

METRICS = SWEEP_METRICS
"""What a trial reports at every validation (besides tokens) and a sweep may rank on."""
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "grid")
_SAE_FIELDS = frozenset().union(*(searchable(cls) for cls in CONFIGS.values()))
LAYER = "layer"
"""The search key of the live source's layer (base.data.live.layers holds one layer per trial;
a pack trains members on several layers from one forward pass)."""
_OWNED_BY_SWEEP = frozenset({"sae.architecture", "sae.d_in", "out_dir", "progress_bar"})
_MAX_CORNERS = 256
NO_OPTUNA = "search: optuna needs the optional extra: pip install 'sae-lab[optuna]'"


# --- how a parameter is written in the YAML --------------------------------------------------


@config
class LogUniform:
    """Drawn log-uniformly from [lo, hi] (integers for integer fields)."""

    loguniform: tuple[float, float]
    """[lo, hi] with 0 < lo < hi."""

    def __post_init__(self) -> None:
        lo, hi = self.loguniform
        require(0 < lo < hi, "loguniform", list(self.loguniform), "[lo, hi] with 0 < lo < hi")


@config
class Uniform:
    """Drawn uniformly from [lo, hi] (integers for integer fields)."""

    uniform: tuple[float, float]
    """[lo, hi] with lo < hi."""

    def __post_init__(self) -> None:
        lo, hi = self.uniform
        require(lo < hi, "uniform", list(self.uniform), "[lo, hi] with lo < hi")


@config
class Choice:
    """One of the listed values, drawn at random (every one with `search: grid`)."""

    choice: Annotated[list[Any], Field(min_length=1)]
    """The options."""


@config
class Grid:
    """Every listed value, each in its own trial(s)."""

    grid: Annotated[list[Any], Field(min_length=1)]
    """The values."""


SPEC_SHAPES = ("a constant or one of {loguniform: [lo, hi]}, {uniform: [lo, hi]}, "
               "{choice: [...]}, {grid: [...]}")
_SPEC_TAGS = {name: f"<{name}>" for name in (*DISTRIBUTIONS, "constant")}
register_tags(*_SPEC_TAGS.values())


def _spec_tag(v: Any) -> str | None:
    if isinstance(v, (LogUniform, Uniform, Choice, Grid)):
        return _SPEC_TAGS[fields(v)[0].name]
    if not isinstance(v, dict):
        return _SPEC_TAGS["constant"]
    kind = next(iter(v)) if len(v) == 1 else None
    return _SPEC_TAGS.get(kind) if kind in DISTRIBUTIONS else None


ParamSpec = Annotated[
    Annotated[LogUniform, Tag(_SPEC_TAGS["loguniform"])]
    | Annotated[Uniform, Tag(_SPEC_TAGS["uniform"])]
    | Annotated[Choice, Tag(_SPEC_TAGS["choice"])]
    | Annotated[Grid, Tag(_SPEC_TAGS["grid"])]
    | Annotated[float | int | bool | str | list | None, Tag(_SPEC_TAGS["constant"])],
    Discriminator(_spec_tag, custom_error_type="param_spec",
                  custom_error_message=f"expected {SPEC_SHAPES}"),
    TypeName("param"),
]
"""One entry of `space.<architecture>`: a constant, or a distribution to draw it from."""


@dataclass
class Param:
    """One searched (or fixed) hyperparameter, resolved against the base config."""

    kind: Literal["constant", "loguniform", "uniform", "choice", "grid"]
    values: list[Any]
    """[lo, hi] for ranges, the options for choice/grid, [value] for a constant."""
    integer: bool = False
    """Ranges draw integers in [lo, hi] inclusive."""

    def corners(self) -> list[Any]:
        """Values that bound what the search can draw: range ends, every option."""
        return list(self.values)

    def to_dict(self) -> Any:
        return self.values[0] if self.kind == "constant" else {self.kind: list(self.values)}


@config
class ObjectiveConfig:
    """How `objective` prices sparsity."""

    l0_weight: Annotated[float, Field(ge=0)] = 1.0
    """FVU one active latent per token must buy, times d_in (see
    sae_lab.training.metrics.objective)."""


@config
class SchedulerConfig:
    """Early stopping: ASHA on `metric` within each architecture (sae_lab.sweep.scheduler)."""

    type: Literal["asha", "none"] = "asha"
    """asha: stop trials in the worst part of their architecture's rung; none: run all out."""
    grace_tokens: Annotated[int, Field(ge=0)] = 0
    """Training tokens before a trial can be stopped; 0 means max_tokens // 4."""
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0
    """Only the best 1/reduction_factor of trials at a rung go on to the next."""
    brackets: Annotated[int, Field(ge=1)] = 1
    """ASHA brackets (1: plain successive halving)."""


@config
class ResourcesConfig:
    """Resources reserved for each trial."""

    cpus: Annotated[float, Field(gt=0)] = 1.0
    """CPU cores per trial (also torch's thread count)."""
    gpus: Annotated[float, Field(ge=0)] = 0.0
    """GPUs per trial; a fraction (0.5) packs several trials on one GPU."""

    def __post_init__(self) -> None:
        require(self.gpus <= 1 or float(self.gpus).is_integer(), "gpus", self.gpus,
                "0, a fraction of one GPU, or a whole number")


def _scheduler_shorthand(v: Any) -> Any:
    """`scheduler: none` means `scheduler: {type: none}`."""
    return {"type": v} if isinstance(v, str) else v


def _pack_size(v: Any) -> Any:
    ok = v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    if not ok:
        raise ValueError(f"pack={v!r}: must be a whole number >= 1 or auto")
    return v


@config
class SweepBench(BenchConfig):
    """`sae-lab bench` at the end of the sweep (sae_lab.sweep.bench): its tasks on the SAEs `on`
    names, their metrics added to results.csv as bench_<metric> columns. `shards` defaults to
    the sweep's data.shards, `last_shards` to its data.val_shards (the held-out shards)."""

    on: Literal["frontier", "best", "all"] = "frontier"
    """frontier: the Pareto-frontier trials (best/frontier_*); best: the best trial of each
    architecture (best/<architecture>); all: every measured trial."""


@config
class SelectConfig:
    """How best/<architecture> is chosen when not by the sweep's metric alone."""

    metric: str
    """A results.csv metric (fvu, l0, dead_frac, ...) or a bench metric (absorption_full,
    probe_sae_top1, ce_score, ...; those need evaluate.on: all)."""
    mode: Literal["min", "max"] = "min"
    """Whether lower (min) or higher (max) is better."""
    within_fvu: Annotated[float, Field(ge=0)] = 0.02
    """Candidates: the architecture's measured trials whose FVU is at most its best FVU plus
    this."""


def _yaml_on(v: Any) -> Any:
    """YAML 1.1 reads an unquoted `on:` key as True: `evaluate: {on: frontier}` means "on"."""
    return {("on" if k is True else k): x for k, x in v.items()} if isinstance(v, dict) else v


def _one_or_list(v: Any) -> Any:
    """`plot: {x: l0, y: fvu}` means a list of that one pair."""
    return [v] if isinstance(v, dict) else v


@config
class PlotAxes:
    """One scatter plot of results.csv: a column on each axis."""

    x: str = "l0"
    """A numeric results.csv column: a metric (l0, fvu, dead_frac, objective, tokens, ...), a
    searched parameter (lr, k, ...) or, with `evaluate:`, `bench_<metric>` (`bench_ce_score`,
    ...)."""
    y: str = "fvu"
    """As x."""


@config
class SweepConfig:
    """A set of SAE trainings to run with Ray Tune and compare."""

    name: str = "sweep"
    """Experiment name (the Tune directory under the output directory)."""
    base: dict[str, Any] = field(default_factory=dict)
    """A TrainConfig (as in `sae-lab train`) every trial starts from."""
    architectures: Annotated[list[str], Field(min_length=1)] = field(default_factory=list)
    """Architectures to compare."""
    space: dict[str, dict[str, ParamSpec]] = field(default_factory=dict)
    """Per architecture (and `all`): parameter -> constant or distribution."""
    num_samples: Annotated[int, Field(ge=1)] = 1
    """Samples per architecture (random search); grids are repeated this many times."""
    metric: Literal[SWEEP_METRICS] = OBJECTIVE
    """What ASHA and the search rank trials on, and `best/` picks by."""
    mode: Literal["min", "max"] = "min"
    """Whether lower (min) or higher (max) metric is better."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Sparsity price in the objective metric."""
    scheduler: Annotated[SchedulerConfig, BeforeValidator(
        _scheduler_shorthand, json_schema_input_type=SchedulerConfig | Literal["asha", "none"],
    )] = field(default_factory=SchedulerConfig)
    """Early stopping."""
    search: Literal["random", "grid", "optuna"] = "random"
    """random (grid params expanded, the rest sampled), grid (every param a grid), optuna (TPE)."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Per trial."""
    max_concurrent: Annotated[int, Field(ge=0)] = 0
    """At most this many trials at once (0: as many as resources allow)."""
    max_failures: Annotated[int, Field(ge=-1)] = 1
    """Retries of a failed trial (from its last checkpoint) before it is marked failed (-1:
    retry forever)."""
    reuse_actors: bool = True
    """Run the next trial in the worker process of a finished one (saves seconds of imports per
    trial); false starts a fresh process for every trial."""
    seed: int = 0
    """Seed of the search algorithm."""
    pack: Annotated[int | Literal["auto"], BeforeValidator(
        _pack_size, json_schema_input_type=Annotated[int, Field(ge=1)] | Literal["auto"])] = 1
    """Train up to this many SAEs that share a data stream (data, batch size, token budget,
    seed) in one Tune trial, from one reader and one batch at a time (sae_lab.sweep.packs);
    auto: one pack per trial slot (GPU, or resources.cpus cores), split further when the members
    would not fit in memory. 1: a trial per SAE."""

    evaluate: Annotated[SweepBench | None, BeforeValidator(
        _yaml_on, json_schema_input_type=SweepBench | None)] = None
    """Bench tasks run at the end of the sweep (and, on --resume, on the SAEs not yet
    benched), e.g. {tasks: [core, sparse_probing, absorption], on: frontier}."""

    select: SelectConfig | None = None
    """Choose best/<architecture> by another metric among the trials close to the best FVU,
    e.g. {metric: absorption_full, mode: min, within_fvu: 0.02}."""

    plot: Annotated[list[PlotAxes], Field(min_length=1), BeforeValidator(
        _one_or_list, json_schema_input_type=PlotAxes | list[PlotAxes])] = field(
        default_factory=lambda: [PlotAxes()])
    """The sweep's scatter plots: the first is `pareto.png`, the others `pareto_<x>_<y>.png`.
    Only the (l0, fvu) pair has the Pareto frontier drawn (lower is better on both); other pairs
    are points only, as which corner is better depends on the columns. Pairs with a
    `bench_<metric>` column are drawn after the bench, e.g.
    `[{x: l0, y: fvu}, {x: l0, y: bench_ce_score}]`."""

    def plot_files(self) -> list[tuple[PlotAxes, str]]:
        """(axes, file name) of each plot: pareto.png, then pareto_<x>_<y>.png."""
        return [(a, "pareto.png" if n == 0 else f"pareto_{a.x}_{a.y}.png".replace("/", "_"))
                for n, a in enumerate(self.plot)]

    def __post_init__(self) -> None:
        require(self.pack == 1 or self.search != "optuna", "pack", self.pack,
                "1 with search: optuna (packs are drawn up front: use random or grid)")
        if self.metric == "objective":
            require(self.mode == "min", "mode", self.mode,
                    "min for metric: objective (lower is better)")
            require(self.objective.l0_weight > 0, "objective.l0_weight",
                    self.objective.l0_weight,
                    "> 0 (0 ranks on raw FVU, which favours the densest SAE)")
        if self.select is not None and self.select.metric not in SWEEP_METRICS:
            require(self.evaluate is not None and self.evaluate.on == "all", "evaluate.on",
                    None if self.evaluate is None else self.evaluate.on,
                    f"all with select.metric: {self.select.metric} (a bench metric of every "
                    "trial)")
            known = [*SWEEP_METRICS, *metric_names(self.evaluate)]
            close = difflib.get_close_matches(self.select.metric, known, 1)
            require(self.select.metric in known, "select.metric", self.select.metric,
                    "a results.csv metric or one of evaluate's tasks' metrics" + (
                        f"; did you mean {close[0]!r}?" if close else f" ({', '.join(known)})"))
        self.base = _absolute_data_paths(self.base)
        self.params: dict[str, dict[str, Param]] = parse_space(self)
        columns = self.plot_columns()
        for n, axes in enumerate(self.plot):
            for axis in ("x", "y"):
                name = getattr(axes, axis)
                close = difflib.get_close_matches(name, columns, 1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                if name.startswith("bench_") and self.evaluate is None:
                    hint = " (bench_ columns need `evaluate:`)"
                require(name in columns, f"plot[{n}].{axis}", name,
                        "a numeric results.csv column" + (
                            hint or f" ({', '.join(columns)})"))

    def plot_columns(self) -> list[str]:
        """The results.csv columns a plot may name: metrics, searched parameters, and
        bench_<metric> for the metrics of `evaluate`'s tasks."""
        standard = ("lr", "sparsity_coef", "k", "expansion_factor")
        params = dict.fromkeys((*standard, *(k for p in self.params.values() for k in p
                                             if k.removeprefix("sae.") not in standard)))
        bench = [] if self.evaluate is None else metric_names(self.evaluate)
        return [*SWEEP_METRICS, "tokens", "wall_time_s", *params,
                *(f"bench_{m}" for m in bench)]

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def train_config(self, architecture: str, values: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: base, then the architecture, then the drawn values."""
        d = copy.deepcopy(self.base)
        sae = d.setdefault("sae", {})
        if not isinstance(sae, dict):
            raise ConfigError(f"base.sae: expected a mapping, got {sae!r}")
        sae["architecture"] = architecture
        for key, value in values.items():
            if key == LAYER:
                key, value = "data.live.layers", [value]
            _set_path(d, key, value)
        d["progress_bar"] = False
        self._group_wandb(d)
        return TrainConfig.from_dict(d)

    def _group_wandb(self, d: dict[str, Any]) -> dict[str, Any]:
        """A sweep's W&B runs (trials, pack members, its summary run) are grouped under its
        name unless the config names a group."""
        if "wandb" in (d.get("loggers") or ()):
            wandb = d.setdefault("wandb", {})
            if isinstance(wandb, dict) and not wandb.get("group"):
                wandb["group"] = self.name
        return d

    def wandb_config(self) -> WandbConfig | None:
        """The W&B settings of the sweep's runs; None without wandb in base.loggers."""
        d = self._group_wandb(copy.deepcopy(self.base))
        return parse(WandbConfig, d["wandb"], "base.wandb") if "wandb" in d else None

    @property
    def num_trials(self) -> int:
        """Trials the search will run (random/grid: grids times num_samples, per architecture)."""
        if self.search == "optuna":
            return self.num_samples * len(self.architectures)
        total = 0
        for arch in self.architectures:
            grid = 1
            for p in self.params[arch].values():
                if p.kind == "grid" or (p.kind == "choice" and self.search == "grid"):
                    grid *= len(p.values)
            total += grid * self.num_samples
        return total


def load_sweep(
    path: str | Path, overrides: list[str] | tuple = (), shards: str | None = None,
    live: dict[str, Any] | None = None,
) -> SweepConfig:
    """Read a sweep YAML; `overrides` are `key.sub=value` strings; `shards` (a directory) or
    `live` (a data.live section) replaces the data source of base.data."""
    path = resolve_sweep_path(path)
    raw = load_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, list(overrides))
    source = {"shards": str(shards)} if shards is not None else {"live": live} if live else None
    if source is not None:
        data = raw.setdefault("base", {}).get("data") or {}
        data = {k: v for k, v in data.items() if k not in ("synthetic", "npy", "shards", "live")}
        if "live" in source:  # shard-only settings do not apply
            data = {k: v for k, v in data.items() if k not in ("val_shards", "num_workers")}
        raw["base"]["data"] = {**data, **source}
    try:
        return sweep_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_sweep_path(path: str | Path) -> Path:
    """A path, or the name of a YAML shipped in the repository's sweeps/ folder (`demo.yaml`)."""
    p = Path(path)
    if p.is_file():
        return p
    here = Path(__file__).resolve().parent
    for folder in (here.parents[1] / "sweeps", here.parent / "sweeps"):
        for name in (p.name, f"{p.name}.yaml"):
            if (folder / name).is_file() and p.parent == Path("."):
                return folder / name
    raise FileNotFoundError(f"sweep file not found: {path}")


def sweep_from_dict(d: Any) -> SweepConfig:
    """Validate a sweep mapping (from YAML); errors name the dotted field."""
    if not isinstance(d, dict):
        raise ConfigError(f"sweep: expected a mapping, got {d!r}")
    return parse(SweepConfig, d)


def parse_space(sweep: SweepConfig) -> dict[str, dict[str, Param]]:
    """architecture -> canonical key -> Param, `all` merged under each architecture's own."""
    for arch in sweep.architectures:
        if arch not in CONFIGS:
            raise ConfigError(f"architectures: unknown architecture {arch!r}; "
                              f"known: {sorted(CONFIGS)}")
    if len(set(sweep.architectures)) != len(sweep.architectures):
        raise ConfigError(f"architectures: listed twice in {sweep.architectures}")
    for name in sweep.space:
        if name != "all" and name not in sweep.architectures:
            raise ConfigError(f"space.{name}: not one of the sweep's architectures "
                              f"{sweep.architectures} (or `all`)")
    out = {}
    for arch in sweep.architectures:
        base = _base_config(sweep, arch)
        shared = _parse_params(sweep.space.get("all") or {}, "space.all", base)
        own = _parse_params(sweep.space.get(arch) or {}, f"space.{arch}", base)
        merged = {**shared, **own}
        if not any(p.kind != "constant" for p in merged.values()):
            raise ConfigError(
                f"space.{arch}: empty search space (nothing to search for {arch}); give at least "
                f"one parameter a distribution, under space.{arch} or space.all"
            )
        out[arch] = merged
    return out


def _parse_params(d: dict[str, Any], where: str, base: TrainConfig) -> dict[str, Param]:
    out = {}
    for key, spec in d.items():
        canon = canonical_key(key)
        if canon in _OWNED_BY_SWEEP:
            raise ConfigError(f"{where}.{key}: set by the sweep itself, cannot be searched")
        out[canon] = _parse_param(spec, _is_int_field(base, canon, where, key))
    return out


def _parse_param(spec: Any, integer: bool) -> Param:
    """A validated ParamSpec -> Param; integer ranges are rounded to integers."""
    if not isinstance(spec, (LogUniform, Uniform, Choice, Grid)):
        return Param("constant", [spec], integer)
    kind = fields(spec)[0].name
    values = list(getattr(spec, kind))
    if kind in ("loguniform", "uniform"):
        values = [int(round(v)) for v in values] if integer else [float(v) for v in values]
    return Param(kind, values, integer)


def canonical_key(key: str) -> str:
    """`k` -> `sae.k`; TrainConfig keys, dotted paths and `layer` are kept."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"space: parameter names must be strings, got {key!r}")
    return f"sae.{key}" if key in _SAE_FIELDS else key


def _is_int_field(base: TrainConfig, canon: str, where: str, key: str) -> bool:
    if canon == LAYER:
        if base.data.live is None:
            raise ConfigError(f"{where}.layer: searching layers needs base.data.live (one "
                              "model feeds every layer of a pack)")
        return True
    node: Any = base
    for part in canon.split("."):
        known = getattr(node, "__dataclass_fields__", {})
        if part not in known and canon.startswith("sae."):
            return False  # another architecture's field: building the trial config names it
        if part not in known:
            raise ConfigError(f"{where}.{key}: unknown parameter {canon!r}"
                              + (f"; known here: {sorted(known)}" if known else ""))
        node = getattr(node, part)
    return isinstance(node, int) and not isinstance(node, bool)


def _base_config(sweep: SweepConfig, arch: str) -> TrainConfig:
    if not isinstance(sweep.base, dict):
        raise ConfigError(f"base: expected a TrainConfig mapping, got {sweep.base!r}")
    d = copy.deepcopy(sweep.base)
    sae = d.get("sae") or {}
    if not isinstance(sae, dict):
        raise ConfigError(f"base.sae: expected a mapping, got {sae!r}")
    d["sae"] = {**sae, "architecture": arch}
    return TrainConfig.from_dict(d, "base")


def _absolute_data_paths(base: Any) -> Any:
    """Trials run in Tune's own working directories: pin relative data paths to the directory
    the sweep was launched from."""
    data = base.get("data") if isinstance(base, dict) else None
    if not isinstance(data, dict):
        return base
    data = dict(data)
    for key in ("shards", "npy"):
        value = data.get(key)
        if isinstance(value, (str, Path)) and "://" not in str(value):
            data[key] = str(Path(value).expanduser().resolve())
    live = data.get("live")
    if isinstance(live, dict):  # local model, tokenizer and dataset paths; Hub ids stay as given
        data["live"] = {k: str(Path(v).expanduser().resolve())
                        if k in ("model", "tokenizer", "dataset") and isinstance(v, (str, Path))
                        and Path(v).expanduser().exists() else v for k, v in live.items()}
    return {**base, "data": data}


def _set_path(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = d
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p} is not a section of the base config")
    node[last] = value


# --- validation against the data -------------------------------------------------------------


@dataclass(frozen=True)
class CheckedSweep:
    """What validation learned about a sweep, so that the runner need not ask again."""

    d_in: dict[str, int | None]
    """The data's width per architecture (None where only a trial can know: a live model)."""
    max_tokens: int
    """The largest training budget of any trial (ASHA's max_t)."""
    grace_tokens: int
    """Training tokens before any trial may be stopped (ASHA's grace period)."""


def validate(sweep: SweepConfig, d_in: int | None = None) -> CheckedSweep:
    """Build every architecture's TrainConfig at each corner of its space; raise ConfigError
    naming the culprit."""
    d_ins, budgets, graces = {}, [], []
    for arch in sweep.architectures:
        for values in corners(sweep.params[arch]):
            where = f"space.{arch} at {_fmt(values)}"
            try:
                cfg = sweep.train_config(arch, values)
                width = d_in if d_in is not None else data_d_in(cfg.data)
                if width is not None:
                    cfg.sae.with_d_in(width)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            _check_schedule(sweep, cfg, where)
            d_ins[arch] = width
            budgets.append(cfg.max_steps * cfg.batch_size)
            graces.append(grace_tokens(sweep, cfg))
    _check_ranking(sweep)
    _check_repeats(sweep)
    if sweep.search == "grid":
        for arch, params in sweep.params.items():
            for key, p in params.items():
                if p.kind in ("loguniform", "uniform"):
                    raise ConfigError(f"space.{arch}.{key}: search: grid needs grid/choice "
                                      f"values, got {p.kind}")
    if sweep.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise ConfigError(NO_OPTUNA)  # now, not after launch (and without importing Ray)
    return CheckedSweep(d_ins, max(budgets), min(graces))


def corners(params: dict[str, Param]) -> list[dict[str, Any]]:
    """Combinations of every parameter's corner values (capped; then one parameter at a time)."""
    options = {k: p.corners() for k, p in params.items()}
    if math.prod(len(o) for o in options.values()) <= _MAX_CORNERS:
        return [dict(zip(options, combo, strict=True))
                for combo in itertools.product(*options.values())]
    first = {k: o[0] for k, o in options.items()}
    return [first] + [{**first, k: v} for k, o in options.items() for v in o[1:]]


def _check_schedule(sweep: SweepConfig, cfg: TrainConfig, where: str) -> None:
    """ASHA must not compare trials before their L0 has settled (warm-ups are over)."""
    if sweep.scheduler.type != "asha":
        return
    grace = grace_tokens(sweep, cfg)
    if grace > cfg.max_steps * cfg.batch_size:
        raise ConfigError(f"scheduler.grace_tokens={grace} is more than max_tokens="
                          f"{cfg.max_tokens}")
    settle = max(cfg.sparsity_warmup_steps, cfg.sae.settle_steps)
    if settle * cfg.batch_size > grace:
        raise ConfigError(
            f"{where}: scheduler.grace_tokens={grace} ends before the sparsity warm-up / k "
            f"schedule ({settle} steps = {settle * cfg.batch_size} tokens); ASHA would rank "
            f"trials whose L0 has not settled. Raise grace_tokens or shorten the warm-up"
        )


def grace_tokens(sweep: SweepConfig, cfg: TrainConfig) -> int:
    return sweep.scheduler.grace_tokens or max(cfg.batch_size, cfg.max_tokens // 4)


def _check_ranking(sweep: SweepConfig) -> None:
    """Ranking raw FVU/MSE across different L0 favours the densest SAE. ASHA compares trials
    within an architecture, so allow it only where every trial of an architecture has the same
    L0 by construction (TopK/BatchTopK with a single k)."""
    if sweep.scheduler.type != "asha" or sweep.metric not in ("fvu", "mse", "l1"):
        return
    for arch in sweep.architectures:
        k_based = issubclass(CONFIGS[arch], TopKConfig)
        ks = {sweep.train_config(arch, v).sae.k for v in corners(sweep.params[arch])} if k_based \
            else set()
        if not k_based or len(ks) > 1:
            raise ConfigError(
                f"metric: {sweep.metric} with scheduler: asha would stop the sparser {arch} "
                "trials first (their L0 differs); use metric: objective, or scheduler: none"
            )


def _check_repeats(sweep: SweepConfig) -> None:
    """num_samples > 1 over a space with nothing random would train identical SAEs."""
    if sweep.num_samples == 1 or sweep.search == "optuna":
        return
    for arch, params in sweep.params.items():
        if all(p.kind in ("constant", "grid") or (p.kind == "choice" and sweep.search == "grid")
               for p in params.values()):
            raise ConfigError(
                f"space.{arch}: only fixed or grid values, so num_samples={sweep.num_samples} "
                "would repeat identical trials; add a random parameter (e.g. lr: {loguniform: "
                "[...]}, or seed: {choice: [0, 1]}) or set num_samples: 1"
            )


def _fmt(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in values.items()) + "}"


