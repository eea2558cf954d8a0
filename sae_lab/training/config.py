"""Training configuration: nested config dataclasses (sae_lab.config), read from and written to
YAML, validated up front.

Every field has a one-line docstring; the docs' config reference, `sae-lab train --help` and
the JSON Schema (`sae-lab schema`) are generated from them.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field

from sae_lab.config import (
    ConfigError,
    PathStr,
    apply_overrides,
    config,
    load_yaml,
    parse,
    require,
    to_dict,
)
from sae_lab.config import (
    reference as _reference,
)
from sae_lab.data.config import DataConfig
from sae_lab.data.synthetic import SyntheticConfig
from sae_lab.files import atomic_write_text
from sae_lab.sae import AnySAEConfig, sae_config
from sae_lab.sae.registry import reference_rows

# DataConfig and SyntheticConfig live with their data (data/config.py, synthetic.py); they are
# re-exported here (see __all__) so imports from sae_lab.training.config keep working.

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]


def _int_as_str(v: Any) -> Any:
    """YAML reads `precision: 32` as a number; it means "32"."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


@config
class WandbConfig:
    """Where a run logs in Weights & Biases (with `loggers: [..., wandb]`)."""

    project: str = "sae_lab"
    """W&B project."""
    entity: str | None = None
    """W&B team or user (None: your default entity)."""
    group: str | None = None
    """Run group (None: no group)."""
    tags: tuple[str, ...] = ()
    """Run tags."""


@config
class ParallelConfig:
    """How one SAE spans several processes (one GPU each): latents x data ranks."""

    latents: PosInt = 1
    """Ranks the dictionary is split over: each holds d_sae / latents latents (its columns of
    W_enc and b_enc, rows of W_dec, and their Adam moments); b_dec is on every rank."""
    data: PosInt = 1
    """Ranks that each read a disjoint part of the data, batch_size / data rows a step, their
    gradients averaged."""

    @property
    def ranks(self) -> int:
        return self.latents * self.data


@config
class TrainConfig:
    """One SAE training run."""

    sae: AnySAEConfig = field(default_factory=sae_config)
    """The autoencoder (see SAEConfig)."""
    data: DataConfig = field(default_factory=lambda: DataConfig(synthetic=SyntheticConfig()))
    """The activations (see DataConfig)."""
    batch_size: PosInt = 4096
    """Tokens per optimisation step."""
    max_tokens: PosInt = 2_000_000
    """Training stops after this many tokens."""
    lr: Annotated[float, Field(gt=0)] = 4e-4
    """Adam learning rate after warm-up."""
    adam_betas: tuple[Beta, Beta] = (0.9, 0.999)
    """Adam's beta1 and beta2."""
    lr_warmup_steps: NonNegInt = 50
    """Steps of linear learning-rate warm-up."""
    lr_decay_start: Annotated[float, Field(ge=0, le=1)] = 0.8
    """Fraction of training after which the learning rate decays linearly to 0 (1: no decay)."""
    sparsity_warmup_steps: NonNegInt = 0
    """Steps over which the sparsity coefficient rises linearly from 0 to lambda."""
    grad_clip: NonNegFloat = 1.0
    """Gradient-norm clipping (0: off)."""
    normalize_activations: bool = True
    """Scale inputs so E||x||^2 = d_in; the scale is folded into the weights on save."""
    init_b_dec: bool = True
    """Initialise b_dec at the geometric median of the first batch."""
    init_near_data: bool = False
    """Scale the initial weights (penalty SAEs) or thresholds (BatchTopK, JumpReLU) on the first
    batch so that the step-0 reconstruction is near it (held-out FVU <= 1) instead of ~d_sae /
    (2 d_in) times too large. Off by default until it keeps every known-answer cell (Gated on
    skewed+noisy: 0.89 matched with it, bar 0.9)."""
    val_every_steps: PosInt = 100
    """Validate every this many steps (and at the end)."""
    val_batches: NonNegInt = 8
    """Batches per periodic validation (0: the whole validation set); the final metrics always
    use the whole held-out set."""
    log_every_steps: PosInt = 10
    """Training metrics are logged every this many steps."""
    nan_policy: Literal["error", "skip"] = "error"
    """On a NaN or inf batch (or held-out row): stop with an error naming the step (the shard),
    or skip and count it."""
    precision: Annotated[Literal["auto", "32", "16-mixed", "bf16-mixed"], BeforeValidator(
        _int_as_str, json_schema_input_type=Literal["auto", "32", "16-mixed", "bf16-mixed", 32]
    )] = "auto"
    """auto: 32 on CPU; on CUDA bf16-mixed where the card has bfloat16 (compute capability 8+),
    16-mixed on older cards (T4, V100). 16-mixed: float16 autocast with a gradient scaler (on CPU
    too); bf16-mixed applies on CUDA only (CPU trains in float32)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; auto picks CUDA when present."""
    seed: int = 0
    """Seed of initialisation and data order."""
    out_dir: PathStr = "runs/sae"
    """Output directory: TensorBoard logs, checkpoints, the final SAE in final/."""
    save_checkpoints: bool = True
    """Keep Lightning checkpoints (best val/fvu and last) in out_dir/checkpoints for --resume."""
    progress_bar: bool = True
    """Show a progress bar when stdout is a terminal (in a file or pipe: a line per validation)."""
    loggers: tuple[Literal["tensorboard", "wandb"], ...] = ("tensorboard",)
    """Where curves go: TensorBoard files in out_dir/tensorboard, W&B (the `wandb` extra)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """The W&B run (see WandbConfig); read only with wandb in loggers."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """One SAE over several GPUs (see ParallelConfig); 1 x 1: one process."""

    def __post_init__(self) -> None:
        require(self.max_tokens >= self.batch_size, "max_tokens", self.max_tokens,
                f">= batch_size={self.batch_size}")
        live = self.data.live
        require(live is None or len(live.layers) == 1, "data.live.layers",
                list(live.layers) if live else None,
                "one layer (an SAE reads one; several layers train as a pack: `layer` in a "
                "sweep's space)")
        require(self.batch_size % self.parallel.data == 0, "batch_size", self.batch_size,
                f"a multiple of parallel.data={self.parallel.data}")
        if self.sae.d_sae:  # else checked once d_in is known (check_parallel)
            check_parallel(self, self.sae.d_sae)

    @property
    def max_steps(self) -> int:
        return self.max_tokens // self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self, path: str | Path) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> TrainConfig:
        """Validate a mapping (from YAML or JSON); errors name the dotted field."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where or 'config'}: expected a mapping, got {d!r}")
        return parse(cls, d, where)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        d = load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        return cls.from_dict(apply_overrides(d, overrides))


def check_parallel(cfg: TrainConfig, d_sae: int) -> None:
    """ConfigError unless parallel.latents divides the number of latents."""
    if d_sae % cfg.parallel.latents:
        raise ConfigError(f"parallel.latents={cfg.parallel.latents}: must divide the "
                          f"{d_sae:,} latents (sae.d_sae)")


def reference(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, doc) of every field, nested sections expanded."""
    rows = _reference(cls, prefix)
    if cls is not TrainConfig:
        return rows
    # The SAE section as the registry lists it: which architectures have each field.
    sae = [i for i, row in enumerate(rows) if row[0].startswith(f"{prefix}sae.")]
    at = sae[0] if sae else 0
    rest = [row for row in rows if not row[0].startswith(f"{prefix}sae.")]
    return rest[:at] + reference_rows(f"{prefix}sae.") + rest[at:]


__all__ = ["ConfigError", "DataConfig", "ParallelConfig", "SyntheticConfig", "TrainConfig",
           "apply_overrides", "check_parallel", "reference"]
