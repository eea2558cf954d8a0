"""Training configuration: nested dataclasses, read from and written to YAML, validated up front.

Every field has a one-line docstring; the README's config reference and `sae-lab train --help`
are generated from them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from sae_lab.sae import sae_config
from sae_lab.sae.config import ConfigError, SAEConfig


@dataclass
class SyntheticConfig:
    """Activations built from known sparse features (see sae_lab.synthetic)."""

    d: int = 64
    """Activation width."""
    n_features: int = 512
    """Number of true unit-norm feature directions."""
    active: float = 5.0
    """Mean number of features active per token."""
    freq_exponent: float = 0.0
    """Feature frequencies follow rank^-freq_exponent (0: all equally frequent)."""
    magnitude_mean: float = 1.0
    """Mean magnitude of an active feature."""
    magnitude_std: float = 0.25
    """Standard deviation of an active feature's magnitude (clipped at 0)."""
    noise_std: float = 0.0
    """Gaussian noise added to every coordinate."""
    n_tokens: int = 200_000
    """Training tokens to generate."""
    seed: int = 0
    """Seed of the features and the samples."""

    def __post_init__(self) -> None:
        for name in ("d", "n_features", "n_tokens"):
            _require("data.synthetic", self, name, getattr(self, name) >= 1, ">= 1")
        _require("data.synthetic", self, "active", 0 < self.active <= self.n_features,
                 "in (0, n_features]")
        _require("data.synthetic", self, "magnitude_std", self.magnitude_std >= 0, ">= 0")
        _require("data.synthetic", self, "noise_std", self.noise_std >= 0, ">= 0")


@dataclass
class DataConfig:
    """Where activations come from: exactly one of synthetic, npy, shards."""

    synthetic: SyntheticConfig | None = None
    """Generate activations from known sparse features."""
    npy: str | None = None
    """Path of a .npy array of shape [N, d_in]."""
    shards: str | None = None
    """Shard directory (or URL) written by `sae-lab harvest`."""
    val_fraction: float = 0.05
    """synthetic/npy: fraction of rows held out for validation."""
    val_shards: int = 1
    """shards: number of shards held out for validation."""
    shuffle_buffer: int = 65_536
    """shards: rows in the shuffle buffer."""
    num_workers: int = 0
    """shards: DataLoader worker processes."""

    def __post_init__(self) -> None:
        if isinstance(self.synthetic, dict):
            self.synthetic = build(SyntheticConfig, self.synthetic, "data.synthetic")
        chosen = [n for n in ("synthetic", "npy", "shards") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ConfigError(
                f"data: set exactly one of synthetic, npy, shards (got {chosen or 'none'})"
            )
        _require("data", self, "val_fraction", 0 < self.val_fraction < 1, "in (0, 1)")
        _require("data", self, "val_shards", self.val_shards >= 1, ">= 1")
        _require("data", self, "shuffle_buffer", self.shuffle_buffer >= 0, ">= 0")
        _require("data", self, "num_workers", self.num_workers >= 0, ">= 0")


@dataclass
class TrainConfig:
    """One SAE training run."""

    sae: SAEConfig = field(default_factory=sae_config)
    """The autoencoder (see SAEConfig)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(synthetic=SyntheticConfig()))
    """The activations (see DataConfig)."""
    batch_size: int = 4096
    """Tokens per optimisation step."""
    max_tokens: int = 2_000_000
    """Training stops after this many tokens."""
    lr: float = 4e-4
    """Adam learning rate after warm-up."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's beta1 and beta2."""
    lr_warmup_steps: int = 50
    """Steps of linear learning-rate warm-up."""
    lr_decay_start: float = 0.8
    """Fraction of training after which the learning rate decays linearly to 0 (1: no decay)."""
    sparsity_warmup_steps: int = 0
    """Steps over which the sparsity coefficient rises linearly from 0 to lambda."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0: off)."""
    normalize_activations: bool = True
    """Scale inputs so E||x||^2 = d_in; the scale is folded into the weights on save."""
    init_b_dec: bool = True
    """Initialise b_dec at the geometric median of the first batch."""
    val_every_steps: int = 100
    """Validate every this many steps (and at the end)."""
    val_batches: int = 8
    """Batches per validation (0: the whole validation set)."""
    log_every_steps: int = 10
    """Training metrics are logged every this many steps."""
    nan_policy: Literal["error", "skip"] = "error"
    """On a NaN or inf batch: stop with an error naming the step, or skip and count it."""
    precision: Literal["32", "bf16-mixed"] = "32"
    """Lightning precision; bf16-mixed only applies on CUDA (CPU falls back to 32)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; auto picks CUDA when present."""
    seed: int = 0
    """Seed of initialisation and data order."""
    out_dir: str = "runs/sae"
    """Output directory: TensorBoard logs, checkpoints, the final SAE in final/."""
    save_checkpoints: bool = True
    """Keep Lightning checkpoints (best val/fvu and last) in out_dir/checkpoints for --resume."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""

    def __post_init__(self) -> None:
        if isinstance(self.sae, dict):
            self.sae = SAEConfig.from_dict(self.sae)
        if isinstance(self.data, dict):
            self.data = build(DataConfig, self.data, "data")
        self.adam_betas = tuple(self.adam_betas)  # YAML gives lists
        _require("", self, "batch_size", self.batch_size >= 1, ">= 1")
        _require("", self, "max_tokens", self.max_tokens >= self.batch_size, ">= batch_size")
        _require("", self, "lr", self.lr > 0, "> 0")
        _require("", self, "adam_betas",
                 len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                 "two numbers in [0, 1)")
        _require("", self, "lr_warmup_steps", self.lr_warmup_steps >= 0, ">= 0")
        _require("", self, "lr_decay_start", 0 <= self.lr_decay_start <= 1, "in [0, 1]")
        _require("", self, "sparsity_warmup_steps", self.sparsity_warmup_steps >= 0, ">= 0")
        _require("", self, "grad_clip", self.grad_clip >= 0, ">= 0")
        _require("", self, "val_every_steps", self.val_every_steps >= 1, ">= 1")
        _require("", self, "val_batches", self.val_batches >= 0, ">= 0")
        _require("", self, "log_every_steps", self.log_every_steps >= 1, ">= 1")
        for name in ("nan_policy", "precision", "device"):
            allowed = _literal_args(type(self), name)
            _require("", self, name, getattr(self, name) in allowed, f"one of {allowed}")

    @property
    def max_steps(self) -> int:
        return self.max_tokens // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return build(cls, d, "")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        d = yaml.safe_load(path.read_text()) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(apply_overrides(d, overrides))


def build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    """cls(**d), with unknown keys reported by their dotted name."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {d!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        names = [f"{prefix}.{u}" if prefix else u for u in unknown]
        raise ConfigError(f"unknown config field(s) {names}; known: {sorted(known)}")
    try:
        return cls(**d)
    except TypeError as e:  # a wrong type deep inside; name the section
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings; values are parsed as YAML (numbers, lists, null)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return d


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it in the class source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value
    return docs


def reference(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, doc) of every field, nested sections expanded."""
    rows = []
    docs = field_docs(cls)
    hints = get_type_hints(cls)
    for f in fields(cls):
        name = f"{prefix}{f.name}"
        if f.name == "sae":  # one section per architecture's own fields
            from sae_lab.sae.registry import reference_rows

            rows += reference_rows(f"{name}.")
            continue
        sub = _dataclass_in(hints[f.name])
        if sub is not None and f.name != "synthetic":
            rows += reference(sub, f"{name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if dataclasses.is_dataclass(default):
            default = "{...}"
        rows.append((name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
        if f.name == "synthetic":
            rows += reference(SyntheticConfig, f"{name}.")
    return rows


def _dataclass_in(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        for a in get_args(tp):
            if dataclasses.is_dataclass(a):
                return a
    return None


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _literal_args(cls: type, name: str) -> tuple:
    return get_args(get_type_hints(cls)[name])


def _require(prefix: str, obj: Any, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        full = f"{prefix}.{name}" if prefix else name
        raise ConfigError(f"{full}={getattr(obj, name)!r}: must be {allowed}")
