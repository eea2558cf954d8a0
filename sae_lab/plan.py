"""`sae-lab plan CONFIG.yaml`: what a harvest, a training run or a sweep will need, from its
config alone (no weights loaded, no data read beyond a manifest), and the check that refuses a
run that would not fit before it starts.

    plan_harvest(HarvestConfig) / plan_train(TrainConfig) / plan_sweep(SweepConfig) -> Plan
    Plan.needs: [Need(what, where = disk | host | device, bytes, phase)], Plan.table()
    check(plan)  -> PlanError (one line) naming the limit crossed: free disk, host RAM
                    (MemAvailable), free device memory; `--no-plan-check` skips it
    sae-lab plan SWEEP --gpus 2 --gpu-memory 15GiB --disk 20GB: the limits of another machine

The figures:
- shards: exact bytes of the tar files `harvest` writes (ustar headers, 512-byte padding,
  10 KiB records, safetensors headers), for max_tokens rows per layer; manifest.json aside.
- model: parameters x dtype bytes of the blocks up to the deepest layer read (harvest loads no
  more), the embeddings and final norms; quantized linear weights take 1 byte (8bit, plus one
  float32 scale per output row) or 0.5 byte (4bit NF4, plus one float32 absmax per 64 weights);
  plus the activations of one forward pass.
- a trial: SAE parameters, their gradients and Adam's two moments (4 x parameters), the batch and
  its temporaries, and the dense [B, d_sae] pre-activations: one buffer on the sparse TopK path
  (sae_lab.sae.sparse_topk), 3.5-9 on the dense paths (each architecture's `step_buffers`,
  measured), or what held-out evaluation needs beyond a step (the "eval" entry of
  `step_buffers`, measured); plus the data: the shuffle buffer (shards) or the arrays held in
  memory (synthetic, npy).
- a parallel run (parallel.latents x parallel.data ranks, one GPU each), per rank: 1/latents
  of every per-latent tensor (W_enc's columns, b_enc, W_dec's rows, thresholds, counters) with
  its gradients and Adam moments, b_dec whole; batch_size / data rows of batch and
  [B, d_sae / latents] pre-activations; across latent ranks the all-gathered top-k candidates
  (k values and indices per token from each rank) and the partial reconstructions summed by
  all-reduce; each rank its own data source (a live model copy). Its checkpoints on disk hold
  the whole SAE, however split. A device limit crossed names the smallest split that fits.
- a pack (packed sweeps): the packs `make_packs` makes, each with its data source once (one
  live model up to its members' deepest layer, and a pool row per layer they read), every
  member's parameters, gradients and Adam moments, and the step buffers of its largest member
  only (members step one after another); packs per GPU as Tune places them.
- a sweep's disk: every trial's checkpoints as Tune keeps them (the last one, plus the next while
  it is written), the final SAEs and best/.
- every process: the Python runtime with torch, Lightning and transformers imported (RUNTIME).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sae_lab.data.harvest import HarvestConfig
    from sae_lab.sweep.schema import SweepConfig
    from sae_lab.training.config import TrainConfig

Where = Literal["disk", "host", "device"]
GiB = 2**30
# Peak RSS of a process that has imported torch, Lightning, transformers and sae_lab's training
# code: 450 MiB measured (Linux, torch 2.13 CPU); rounded up for allocator slack.
RUNTIME = 512 * 2**20
_TAR_BLOCK, _TAR_RECORD = 512, 20 * 512
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
# A CUDA process's context (kernels, cuBLAS workspace) before any tensor: typically 0.3-0.5 GiB
# (not measured here: this machine has no GPU).
CUDA_CONTEXT = 512 * 2**20

class PlanError(ValueError):
    """A run that would cross a limit (disk, host RAM, device memory); one line."""


@dataclass(frozen=True)
class Need:
    what: str
    where: Where
    bytes: int
    phase: str = ""
    """Needs of different phases (a sweep's disk while training, after it) are not held at once:
    a total counts the largest phase."""


@dataclass
class Plan:
    """What one harvest / training run / sweep needs; `device` is where the model or SAE runs."""

    title: str
    device: str = "cpu"
    disk_path: str = "."
    needs: list[Need] = field(default_factory=list)
    copies: dict[Where, int] = field(default_factory=dict)
    """Concurrent copies of the per-run needs (sweep trials per machine / per GPU)."""
    notes: list[str] = field(default_factory=list)
    split: Callable[[int], str] | None = field(default=None, repr=False)
    """Given one GPU's memory: the smallest parallel split that fits it, in words."""

    def add(self, what: str, where: Where, nbytes: float, phase: str = "") -> None:
        if where == "device" and not self.device.startswith("cuda"):
            where = "host"  # a CPU run keeps its "device" memory in RAM
        self.needs.append(Need(what, where, int(nbytes), phase))

    def total(self, where: Where) -> int:
        phases: dict[str, int] = {}
        for n in self.needs:
            if n.where == where:
                phases[n.phase] = phases.get(n.phase, 0) + n.bytes
        base = phases.pop("", 0)
        return (base + max(phases.values(), default=0)) * self.copies.get(where, 1)

    def table(self) -> str:
        lines = [self.title]
        for where in ("disk", "host", "device"):
            rows = [n for n in self.needs if n.where == where]
            if not rows:
                continue
            times = self.copies.get(where, 1)
            label = {"disk": "disk", "host": "host RAM", "device": f"device ({self.device})"}
            each = ""
            if times > 1:
                each = f" ({times} trials)" if where == "disk" else f" ({times} at once)"
            if len({n.phase for n in rows}) > 1:
                each += " (the larger phase)"
            lines.append(f"  {label[where]}: {human(self.total(where))}{each}")
            lines += [f"    {human(n.bytes):>10}  {n.phase + ': ' if n.phase else ''}{n.what}"
                      for n in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def parse_size(text: str) -> int:
    """Bytes of "20GB", "15GiB", "512 MiB" (pydantic's ByteSize; a unit is required: a bare
    "12" is more likely a slip than twelve bytes)."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        if any(c.isalpha() for c in text):
            return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        pass
    raise ValueError(f"{text!r}: expected a size such as 20GB or 15GiB")


def human(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


# --- shards --------------------------------------------------------------------------------


def shard_bytes(rows: int, d_in: int, dtype: str, shard_rows: int, block_rows: int) -> int:
    """Exact bytes of the .tar files a harvest of `rows` rows writes (one layer)."""
    total = 0
    full, last = divmod(rows, shard_rows)
    for n_rows, count in ((shard_rows, full), (last, 1 if last else 0)):
        if count:
            total += count * _tar_bytes(n_rows, d_in, dtype, block_rows)
    return total


def _tar_bytes(rows: int, d_in: int, dtype: str, block_rows: int) -> int:
    full, last = divmod(rows, block_rows)
    members = full * _member_bytes(block_rows, d_in, dtype)
    if last:
        members += _member_bytes(last, d_in, dtype)
    end = members + 2 * _TAR_BLOCK  # tarfile's end-of-archive marker
    return math.ceil(end / _TAR_RECORD) * _TAR_RECORD


def _member_bytes(rows: int, d_in: int, dtype: str) -> int:
    data = _safetensors_bytes(rows, d_in, dtype)
    return _TAR_BLOCK + math.ceil(data / _TAR_BLOCK) * _TAR_BLOCK


def _safetensors_bytes(rows: int, d_in: int, dtype: str) -> int:
    """Bytes of shards.encode_block for a block of `rows` rows: the header written by safetensors
    itself on empty stand-ins of the same shapes (the crc32 metadata at its longest, 10 digits)."""
    import torch
    from safetensors.torch import save

    from sae_lab.data.shards import DTYPES

    probe = {"acts": torch.empty(rows, d_in, dtype=DTYPES[dtype]),
             "token_ids": torch.empty(rows, dtype=torch.int32),
             "doc": torch.empty(rows, dtype=torch.int64),
             "pos": torch.empty(rows, dtype=torch.int32)}
    return len(save(probe, metadata={"crc32": "4294967295"}))


# --- models --------------------------------------------------------------------------------


def model_config(name: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    from transformers import AutoConfig

    from sae_lab.lm.load import resolve_model

    return AutoConfig.from_pretrained(resolve_model(name), revision=revision,
                                      trust_remote_code=trust_remote_code)


def model_bytes(config: Any, dtype: str = "float32", quantize: str = "none",
                keep_layers: int | None = None) -> int:
    """Bytes of the weights (and buffers) of the bare model of `config` with `keep_layers`
    blocks, counted on a model built on the meta device (nothing allocated)."""
    import copy

    import torch
    from torch import nn
    from transformers import AutoModel

    from sae_lab.lm.load import truncate_config

    config = copy.deepcopy(config)
    if keep_layers is not None:
        truncate_config(config, keep_layers)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    itemsize = _DTYPE_BYTES[dtype]
    total = 0
    quantized: set[int] = set()
    if quantize != "none":
        from sae_lab.lm.hooks import blocks

        for block in blocks(model):
            for mod in block.modules():
                if isinstance(mod, nn.Linear):
                    w = mod.weight
                    quantized.add(id(w))
                    if quantize == "8bit":
                        total += w.numel() + 4 * w.shape[0]  # int8 + a float32 scale per row
                    else:
                        total += w.numel() // 2 + 4 * math.ceil(w.numel() / 64)  # NF4 + absmax
    for p in model.parameters():
        if id(p) not in quantized:
            total += p.numel() * (itemsize if p.is_floating_point() else p.element_size())
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    return total


def forward_bytes(config: Any, windows: int, ctx_len: int, dtype: str) -> int:
    """Activations alive during one block of a forward pass (no gradients): the residual stream
    and a few d_model-wide temporaries, the MLP's hidden units (gate, up, product), and one
    [heads, T, T] attention-score matrix per window."""
    d = config.hidden_size
    d_ff = getattr(config, "intermediate_size", None) or 4 * d
    heads = getattr(config, "num_attention_heads", 1)
    tokens = windows * ctx_len
    return _DTYPE_BYTES[dtype] * (tokens * (6 * d + 3 * d_ff) + windows * heads * ctx_len ** 2)


def _device(name: str, gpus: int | None) -> str:
    """Where a run would put its model / SAE: `gpus` GPUs assumed when given (planning for
    another machine), else what this machine has."""
    if gpus is not None:
        return "cuda" if gpus > 0 and name != "cpu" else "cpu"
    if name.startswith("cuda"):
        return name  # planned even where this machine has no CUDA
    from sae_lab.lm.load import resolve_device

    return resolve_device(name)


# --- the three commands --------------------------------------------------------------------


def plan_harvest(cfg: HarvestConfig, config: Any = None, gpus: int | None = None) -> Plan:
    """Disk for the shards of every layer; memory for the model and its forward passes."""
    from sae_lab.data.harvest import _auto_shard_rows
    from sae_lab.lm.load import canonical_name

    config = config or model_config(cfg.model, cfg.revision, cfg.trust_remote_code)
    device = _device("cuda" if cfg.device_map == "auto" else cfg.device, gpus)
    plan = Plan(f"harvest {canonical_name(cfg.model)} layers {list(cfg.layers)} -> {cfg.out}",
                device, cfg.out)
    d_in = config.hidden_size
    shard_rows = cfg.shard_rows or _auto_shard_rows(d_in, cfg.dtype, cfg.block_rows)
    if cfg.max_tokens:
        one = shard_bytes(cfg.max_tokens, d_in, cfg.dtype, shard_rows, cfg.block_rows)
        plan.add(f"shards: {cfg.max_tokens:,} tokens x {len(cfg.layers)} layer(s) x d_in {d_in}"
                 f" x {cfg.dtype} (exact tar bytes)", "disk", one * len(cfg.layers))
    else:
        plan.notes.append("max_tokens=0 (the whole dataset): shard bytes unknown; each token "
                          f"takes {d_in * _DTYPE_BYTES[cfg.dtype] + 16} B per layer")
    keep = min(max(cfg.layers) + 1, config.num_hidden_layers)
    q = "" if cfg.quantize == "none" else f", {cfg.quantize}"
    plan.add(f"model weights: {keep} of {config.num_hidden_layers} blocks, {cfg.model_dtype}{q}",
             "device", model_bytes(config, cfg.model_dtype, cfg.quantize, keep))
    plan.add(f"forward pass: {cfg.batch_size} windows x {cfg.ctx_len} tokens", "device",
             forward_bytes(config, cfg.batch_size, cfg.ctx_len, cfg.model_dtype))
    if device.startswith("cuda"):
        plan.add("CUDA context", "device", CUDA_CONTEXT)
    tokens = cfg.batch_size * cfg.ctx_len
    plan.add("captured activations and the block being written", "host",
             len(cfg.layers) * (tokens * d_in * 4 + 2 * cfg.block_rows * d_in * 4))
    plan.add("Python, torch, transformers", "host", RUNTIME)
    return plan


def live_d_in(cfg: TrainConfig) -> int | None:
    """Width of a live source's activations: the model's hidden size (residual-stream hooks)."""
    live = cfg.data.live
    if live is None:
        return None
    return model_config(live.model, live.revision, live.trust_remote_code).hidden_size


def add_live_model(plan: Plan, live: Any) -> None:
    """The model a live source runs inside training: its blocks up to the layer, one forward."""
    config = model_config(live.model, live.revision, live.trust_remote_code)
    keep = min(max(live.layers) + 1, config.num_hidden_layers)
    q = "" if live.quantize == "none" else f", {live.quantize}"
    plan.add(f"live model weights: {keep} of {config.num_hidden_layers} blocks, "
             f"{live.model_dtype}{q}", "device",
             _live_model_bytes(live.model, live.revision, live.trust_remote_code,
                               live.model_dtype, live.quantize, keep))
    plan.add(f"live forward pass: {live.batch_size} windows x {live.ctx_len} tokens", "device",
             forward_bytes(config, live.batch_size, live.ctx_len, live.model_dtype))


@functools.lru_cache(maxsize=16)
def _live_model_bytes(name: str, revision: str | None, trust_remote_code: bool, dtype: str,
                      quantize: str, keep: int) -> int:
    # Built once per process: the search for a parallel split that fits plans the same model
    # for every split it tries.
    return model_bytes(model_config(name, revision, trust_remote_code), dtype, quantize, keep)


def plan_train(cfg: TrainConfig, d_in: int | None = None, gpus: int | None = None) -> Plan:
    """Memory for one training run; disk for its checkpoints and final SAE."""
    if d_in is None:
        from sae_lab.data.config import data_d_in

        d_in = data_d_in(cfg.data) or live_d_in(cfg)
        if d_in is None:
            raise PlanError("plan: cannot tell the data's d_in (a remote shard set): set sae.d_in")
    plan = Plan(f"train {cfg.sae.architecture} -> {cfg.out_dir}", _device(cfg.device, gpus),
                cfg.out_dir)
    add_trial(plan, cfg, d_in)
    plan.add("Python, torch, Lightning", "host", RUNTIME)
    ranks = cfg.parallel.ranks
    if ranks > 1:
        plan.copies = {"host": ranks}
        plan.notes.append(f"{ranks} ranks (parallel.latents {cfg.parallel.latents} x data "
                          f"{cfg.parallel.data}), one GPU each: device memory is one rank's")
    plan.split = _splitter(cfg, d_in, plan.device, gpus, "parallel")
    return plan


def trial_device(cfg: TrainConfig, d_in: int, device: str) -> int:
    """Device memory of one rank of a training run of `cfg`."""
    plan = Plan("", device)
    add_trial(plan, cfg, d_in, disk=False)
    return plan.total("device")


def splits(cfg: TrainConfig, d_in: int, most: int) -> list[tuple[int, int]]:
    """(latents, data) of every parallel run of `cfg` on at most `most` ranks that the config
    allows (latents divides d_sae, data divides batch_size), fewest ranks first and, among as
    many, more latent ranks first (they split the SAE's state, data ranks only the batch)."""
    f = cfg.sae.with_d_in(d_in).latents
    return [(n // data, data) for n in range(1, most + 1) for data in range(1, n + 1)
            if n % data == 0 and f % (n // data) == 0 and cfg.batch_size % data == 0]


def smallest_split(cfg: TrainConfig, d_in: int, device: str, limit: int,
                   most: int) -> tuple[int, int] | None:
    """The first of `splits` whose ranks each fit `limit` bytes of device memory."""
    from sae_lab.training.config import ParallelConfig

    for latents, data in splits(cfg, d_in, most):
        trial = copy.copy(cfg)  # a shallow copy: only its parallel is replaced
        trial.parallel = ParallelConfig(latents=latents, data=data)
        if trial_device(trial, d_in, device) <= limit:
            return latents, data
    return None


def _splitter(cfg: TrainConfig, d_in: int, device: str, gpus: int | None,
              key: str) -> Callable[[int], str]:
    most = gpus if gpus else (_cuda_count() or 64)

    def split(limit: int) -> str:
        found = smallest_split(cfg, d_in, device, limit, most)
        if found is None:
            return f"no split over {most} GPU(s) fits"
        latents, data = found
        if (latents, data) == (cfg.parallel.latents, cfg.parallel.data):
            return ""
        words = [f"{key}.latents {latents}"] + ([f"{key}.data {data}"] if data > 1 else [])
        return "fits with " + ", ".join(words)

    return split


def add_trial(plan: Plan, cfg: TrainConfig, d_in: int, data_source: bool = True,
              checkpoints: int | None = None, disk: bool = True) -> None:
    """Add one training run's needs to `plan` (one rank's memory when it runs in parallel;
    without its data source unless `data_source`, without its checkpoints and final SAE unless
    `disk`)."""
    from sae_lab.training.config import check_parallel

    sae = cfg.sae.with_d_in(d_in)
    check_parallel(cfg, sae.latents)
    whole, share = sae_bytes(sae, d_in), sae_bytes(sae, d_in, cfg.parallel.latents)
    if cfg.parallel.latents == 1:
        plan.add(f"SAE {d_in} x {sae.latents}: parameters, gradients, Adam moments "
                 f"({whole.params:,} params)", "device", 4 * whole.param_bytes)
    else:
        plan.add(f"SAE {d_in} x {sae.latents}, 1/{cfg.parallel.latents} of its latents a rank: "
                 f"parameters, gradients, Adam moments ({share.params:,} of {whole.params:,} "
                 "params)", "device", 4 * share.param_bytes)
    add_step(plan, cfg, d_in)
    add_autocast(plan, [cfg], share.params)
    if plan.device.startswith("cuda"):
        plan.add("CUDA context", "device", CUDA_CONTEXT)
    if data_source:
        add_source(plan, cfg, d_in)
    if not disk:
        return
    if checkpoints is None:  # `train` keeps best and last
        checkpoints = 2 if cfg.save_checkpoints else 0
    if checkpoints:
        plan.add(f"checkpoints: {checkpoints}, with Adam state", "disk",
                 checkpoints * 3 * whole.param_bytes)
    plan.add("final SAE (safetensors)", "disk", whole.param_bytes)


def rank_rows(cfg: TrainConfig) -> int:
    """Rows of a batch one rank holds: batch_size over the data ranks."""
    return cfg.batch_size // cfg.parallel.data


def autocast_precision(cfg: TrainConfig, device: str) -> str | None:
    """The 16-bit autocast `cfg.precision` runs under on `device`, else None (float32). On CUDA,
    auto is one of the two (bf16-mixed or 16-mixed by card); on CPU only 16-mixed autocasts."""
    if cfg.precision == "32" or (not device.startswith("cuda") and cfg.precision != "16-mixed"):
        return None
    return "16-bit (by card)" if cfg.precision == "auto" else cfg.precision


def add_autocast(plan: Plan, cfgs: list[TrainConfig], n_params: int) -> None:
    """Autocast keeps a 16-bit copy of each weight it casts for the step (the encoder and decoder
    matrices). The step's buffers stay counted at float32: the sparse kernels compute in float32."""
    mixed = {p for c in cfgs if (p := autocast_precision(c, plan.device))}
    if mixed:
        plan.add(f"autocast ({', '.join(sorted(mixed))}): 16-bit copies of the weights", "device",
                 2 * n_params)


def step_buffers(cfg: TrainConfig, d_in: int) -> tuple[float, str]:
    """(copies of the dense [B, d_sae] float32 pre-activations a training step holds, path)."""
    path = getattr(cfg.sae, "decoder", "dense")
    buffers = _buffers(cfg)
    return buffers.get(path, buffers["dense"]), path  # auto starts dense


def _buffers(cfg: TrainConfig) -> dict[str, float]:
    from sae_lab.sae import ARCHITECTURES

    return {"eval": 4.5} | ARCHITECTURES[cfg.sae.architecture].step_buffers


def _step_bytes(cfg: TrainConfig, d_in: int) -> float:
    f = cfg.sae.with_d_in(d_in).latents // cfg.parallel.latents
    return step_buffers(cfg, d_in)[0] * rank_rows(cfg) * f * 4


def add_step(plan: Plan, cfg: TrainConfig, d_in: int, label: str = "") -> None:
    """A training step's temporaries: the [B, d_sae] pre-activations and the batch's (one
    rank's rows and latents), and what latent ranks exchange."""
    f, b = cfg.sae.with_d_in(d_in).latents // cfg.parallel.latents, rank_rows(cfg)
    copies, path = step_buffers(cfg, d_in)
    plan.add(f"{label}pre-activations [B={b}, d_sae={f}] float32 x {copies:g} ({path} path)",
             "device", _step_bytes(cfg, d_in))
    plan.add(f"batch [B={b}, d_in={d_in}] and its temporaries", "device", 8 * b * d_in * 4)
    # Held-out evaluation (validation, final metrics) runs between steps, so only what it needs
    # beyond the step counts; the exported SAE it reads takes the place of the freed gradients.
    evals = _buffers(cfg)["eval"]
    extra = evals * b * f * 4 - copies * b * f * 4 - 8 * b * d_in * 4
    if extra > 0:
        plan.add(f"{label}held-out evaluation: dense codes and metrics [B={b}, d_sae={f}] "
                 f"float32 x {evals:g}, beyond the step's", "device", extra)
    n = cfg.parallel.latents
    if n > 1:
        k = getattr(cfg.sae, "k_max", 0)
        if k:  # each rank's own top k (value float32, index int64) per token, from every rank
            plan.add(f"top-k candidates gathered from {n} ranks [{n} x B={b} x k={k}], "
                     "float32 values and int64 indices", "device", n * b * k * (4 + 8))
        plan.add(f"partial reconstruction and its all-reduce [B={b}, d_in={d_in}] float32 x 2",
                 "device", 2 * b * d_in * 4)


def add_source(plan: Plan, cfg: TrainConfig, d_in: int, layers: list[int] | None = None) -> None:
    """The data source of a run (a pack shares one, a live one reading every member's `layers`;
    each rank of a parallel run has its own)."""
    data, b = cfg.data, rank_rows(cfg)
    if data.shards is not None:
        dtype = _manifest(data.shards).get("dtype", "float32")
        plan.add(f"shuffle buffer: {data.shuffle_buffer:,} rows x {dtype}", "host",
                 max(data.shuffle_buffer, b) * d_in * _DTYPE_BYTES.get(dtype, 4))
    elif data.live is not None:
        from dataclasses import replace

        live = replace(data.live, layers=tuple(layers)) if layers else data.live
        add_live_model(plan, live)
        # the pool of rows mixed across contexts sits on the model's device, a row per layer
        n = len(live.layers)
        plan.add(f"live shuffle pool: {data.shuffle_buffer:,} rows float32"
                 + (f" x {n} layers" if n > 1 else ""), "device",
                 n * max(data.shuffle_buffer, b) * d_in * 4)
    elif data.synthetic is not None:
        rows = data.synthetic.n_tokens + max(b, int(data.synthetic.n_tokens * data.val_fraction))
        plan.add(f"synthetic activations: {rows:,} rows float32", "host", rows * d_in * 4)
    elif data.npy is not None:
        plan.add(f"{data.npy} in memory (float32)", "host",
                 2 * os.path.getsize(data.npy) * 4 // max(1, _npy_itemsize(data.npy)))


@dataclass(frozen=True)
class SAEBytes:
    """One SAE's sizes, counted on the meta device (nothing allocated)."""

    params: int
    """Number of parameters."""
    param_bytes: int
    """Their bytes, in the SAE's dtype."""
    buffer_bytes: int
    """Buffers (dead-latent counters, thresholds): saved, not trained."""

    @property
    def saved(self) -> int:
        """What a saved SAE holds (safetensors; header and config aside)."""
        return self.param_bytes + self.buffer_bytes

    @property
    def training(self) -> int:
        """In memory while training: parameters, gradients, Adam's two moments, buffers."""
        return 4 * self.param_bytes + self.buffer_bytes

    @property
    def checkpoint(self) -> int:
        """In a checkpoint while it trains: parameters, buffers and Adam's two moments."""
        return 3 * self.param_bytes + self.buffer_bytes


def sae_bytes(sae: Any, d_in: int, latents: int = 1) -> SAEBytes:
    """Sizes of the SAE `sae` (a config) on d_in inputs, or of one rank's share when its
    latents are split over `latents` ranks: every tensor with a d_sae axis (b_dec aside, which
    every rank holds whole) divided by `latents`."""
    import torch

    from sae_lab.sae import ARCHITECTURES

    sae = sae.with_d_in(d_in)
    with torch.device("meta"):
        module = ARCHITECTURES[sae.architecture](sae)

    def share(name: str, t: Any) -> int:
        split = latents > 1 and sae.latents in t.shape and name.rsplit(".", 1)[-1] != "b_dec"
        return t.numel() // latents if split else t.numel()

    params = [(share(n, p), p.element_size()) for n, p in module.named_parameters()]
    return SAEBytes(sum(n for n, _ in params), sum(n * size for n, size in params),
                    sum(share(n, b) * b.element_size() for n, b in module.named_buffers()))


def sae_params(sae: Any, d_in: int) -> int:
    """Parameters of the SAE `sae` (a config) on d_in inputs, counted on the meta device."""
    import torch

    from sae_lab.sae import ARCHITECTURES

    with torch.device("meta"):
        module = ARCHITECTURES[sae.architecture](sae.with_d_in(d_in))
    return sum(p.numel() for p in module.parameters())


def plan_sweep(sweep: SweepConfig, gpus: int | None = None,
               gpu_memory: int | None = None) -> Plan:
    """A packed sweep: its packs (plan_packs). Else the largest trial (corners of every
    architecture's space), times the trials that run at once on this machine (and on one GPU)."""
    from sae_lab.sweep.schema import corners

    if sweep.pack != 1:
        return plan_packs(sweep, gpus, gpu_memory)
    biggest, size = None, -1
    for arch in sweep.architectures:
        for values in corners(sweep.params[arch]):
            cfg = sweep.train_config(arch, values)
            d_in = _trial_d_in(cfg)
            s = sae_params(cfg.sae.with_d_in(d_in), d_in) + cfg.batch_size * cfg.sae.with_d_in(
                d_in).latents
            if s > size:
                biggest, size, big_d = cfg, s, d_in
    assert biggest is not None
    res = sweep.resources
    device = _device(biggest.device, gpus)
    ranks = biggest.parallel.ranks
    per_gpu = max(1, int(1 / res.gpus)) if 0 < res.gpus < 1 else 1
    machine = sweep.max_concurrent or max(1, int((os.cpu_count() or 1) // (res.cpus * ranks)))
    if res.gpus and device.startswith("cuda"):
        n_gpus = _cuda_count() if gpus is None else gpus
        machine = min(machine, int(n_gpus / (res.gpus * ranks))) if n_gpus else machine
    machine = max(1, machine)
    plan = Plan(f"sweep {sweep.name}: {sweep.num_trials} trials, largest "
                f"{biggest.sae.architecture} d_sae {biggest.sae.with_d_in(big_d).latents} "
                f"batch {biggest.batch_size}", device, ".")
    add_trial(plan, biggest, big_d, disk=False)
    plan.add("Python, torch, Lightning, Ray worker", "host", RUNTIME)
    plan.copies = {"host": machine * ranks,
                   "device": per_gpu if device.startswith("cuda") else machine * ranks}
    add_trials_disk(plan, sweep, sae_bytes(biggest.sae, big_d), min(machine, sweep.num_trials))
    plan.notes.append(f"{machine} trial(s) at once on this machine"
                      + (f", {per_gpu} per GPU" if device.startswith("cuda") else ""))
    if ranks > 1:
        plan.notes.append(f"each trial spans {ranks} ranks (parallel.latents "
                          f"{biggest.parallel.latents} x data {biggest.parallel.data}), "
                          f"{res.gpus:g} GPU and {res.cpus:g} CPU(s) each: device memory is "
                          "one rank's")
    plan.split = _splitter(biggest, big_d, device, gpus, "base.parallel")
    return plan


def add_trials_disk(plan: Plan, sweep: SweepConfig, size: SAEBytes, running: int) -> None:
    """An unpacked sweep's disk, every trial as large as `size`: a running trial's checkpoint
    holds its Lightning state (weights, buffers, Adam moments) and its SAE, and Tune writes the
    next before deleting the last; a finished trial keeps its final SAE only."""
    from sae_lab.sweep.run import KEEP_CHECKPOINTS

    n, at_most = sweep.num_trials, KEEP_CHECKPOINTS + 1
    plan.add(f"checkpoints of the {running} trial(s) running at once: {at_most} each (Tune keeps "
             f"{KEEP_CHECKPOINTS} and writes the next before deleting it), with Adam moments and "
             "the SAE", "disk", running * at_most * (size.checkpoint + size.saved),
             "while training")
    plan.add(f"final SAEs of the other {n - running} trial(s)", "disk",
             (n - running) * size.saved, "while training")
    plan.add(f"final SAEs: {n}, in each trial's last checkpoint", "disk", n * size.saved,
             "after training")
    plan.add(f"best/: the best SAE of each of {len(sweep.architectures)} architecture(s) and "
             "the Pareto frontier (at most every SAE)", "disk",
             (len(sweep.architectures) + n) * size.saved, "after training")


def _trial_d_in(cfg: TrainConfig) -> int:
    from sae_lab.config import ConfigError
    from sae_lab.data.config import data_d_in

    try:
        d_in = data_d_in(cfg.data) or live_d_in(cfg) or cfg.sae.d_in
    except ConfigError:  # shards not harvested yet: sae.d_in says the width
        if not cfg.sae.d_in:
            raise
        d_in = cfg.sae.d_in
    if not d_in:
        raise PlanError("plan: cannot tell the data's d_in (a remote shard set): set "
                        "base.sae.d_in")
    return d_in


def plan_packs(sweep: SweepConfig, gpus: int | None = None,
               gpu_memory: int | None = None) -> Plan:
    """A packed sweep as it will run: the packs `make_packs` makes for this machine (or for one
    with `gpus` GPUs of `gpu_memory` bytes), the largest pack's memory times the packs that run
    at once on a GPU (and on the machine), and the disk of every pack's checkpoints."""
    from sae_lab.sweep.packs import make_packs, memory_budget, trial_slots
    from sae_lab.sweep.run import KEEP_CHECKPOINTS

    res = sweep.resources
    n_gpus = _cuda_count() if gpus is None else gpus
    # Planning for another machine, its CPU count is unknown: enough for its GPUs' trials.
    cpus = float(os.cpu_count() or 1) if gpus is None or not res.gpus else \
        res.cpus * n_gpus / res.gpus
    slots = trial_slots(sweep, [{"CPU": cpus, "GPU": float(n_gpus)}])
    budget = memory_budget(sweep, gpu_memory) if gpus is None or gpu_memory else 0.0
    packs = make_packs(sweep, slots, budget)
    cfgs = [[sweep.train_config(m.architecture, m.values) for m in pack] for pack in packs]
    split = cfgs[0][0].parallel.ranks > 1
    if split:  # not planned per rank for packs yet: as one process
        cfgs = [[_one_process(c) for c in pack] for pack in cfgs]
    d_in = _trial_d_in(cfgs[0][0])  # one data source per sweep (base.data)
    sizes = [[sae_bytes(c.sae, d_in) for c in pack] for pack in cfgs]
    device = _device(cfgs[0][0].device, gpus)
    on_gpu = device.startswith("cuda") and res.gpus > 0
    per_gpu = max(1, int(1 / res.gpus)) if 0 < res.gpus < 1 else 1
    at_once = min(slots, len(packs))
    def need(i: int) -> float:  # what differs between packs: members' state, largest step
        return sum(s.training for s in sizes[i]) + max(_step_bytes(c, d_in) for c in cfgs[i])

    biggest = max(range(len(packs)), key=need)
    members = sum(len(p) for p in packs)
    plan = Plan(f"sweep {sweep.name}: {members} SAEs in {len(packs)} pack(s) of up to "
                f"{max(len(p) for p in packs)}, {at_once} at once"
                + (f", {per_gpu} per GPU" if on_gpu else ""), device, ".")
    add_pack(plan, cfgs[biggest], sizes[biggest], d_in)
    plan.add("Python, torch, Lightning, Ray worker", "host", RUNTIME)
    plan.copies = {"host": at_once, "device": min(per_gpu, at_once) if on_gpu else at_once}
    everyone = [s for pack in sizes for s in pack]
    at_most = KEEP_CHECKPOINTS + 1
    plan.add(f"pack checkpoints: {len(packs)} pack(s) x {at_most} (Tune keeps "
             f"{KEEP_CHECKPOINTS}, and writes the next before deleting it) x every member's "
             "weights, buffers and Adam moments", "disk",
             at_most * sum(s.checkpoint for s in everyone), "while training")
    plan.add(f"final SAEs: {members}, in each pack's last checkpoint", "disk",
             sum(s.saved for s in everyone), "after training")
    largest = max(s.saved for s in everyone)
    plan.add(f"best/: the best SAE of each of {len(sweep.architectures)} architecture(s) and "
             "the Pareto frontier (at most every SAE)", "disk",
             len(sweep.architectures) * largest + sum(s.saved for s in everyone),
             "after training")
    data = cfgs[0][0].data
    if data.shards is not None and (Path(str(data.shards)) / "manifest.json").is_file():
        held = sum(p.stat().st_size for p in Path(str(data.shards)).glob("*.tar"))
        plan.notes.append(f"shards read from {data.shards}: {human(held)} already on disk, "
                          "not counted")
    plan.notes.append("a running member's checkpoint holds its Adam moments; a stopped one's "
                      "only its weights (so the disk shrinks as ASHA stops members)")
    if split:
        plan.notes.append("base.parallel: a pack's memory is planned here as one process's, "
                          "not per rank (pack: 1 plans each rank)")
    return plan


def _one_process(cfg: TrainConfig) -> TrainConfig:
    from sae_lab.training.config import ParallelConfig

    one = copy.copy(cfg)
    one.parallel = ParallelConfig()
    return one


def add_pack(plan: Plan, cfgs: list[TrainConfig], sizes: list[SAEBytes], d_in: int) -> None:
    """One pack's memory: its data source once, every member's training state, and the step of
    its largest member (members step one after another, each backward freeing its graph)."""
    plan.add(f"{len(cfgs)} SAEs: parameters, gradients, Adam moments, buffers "
             f"({sum(s.params for s in sizes):,} params)", "device",
             sum(s.training for s in sizes))
    steps = [_step_bytes(c, d_in) for c in cfgs]
    add_step(plan, cfgs[steps.index(max(steps))], d_in, "largest member's step: ")
    add_autocast(plan, cfgs, sum(s.params for s in sizes))
    if plan.device.startswith("cuda"):
        plan.add("CUDA context", "device", CUDA_CONTEXT)
    layers = sorted({c.data.live.layers[0] for c in cfgs if c.data.live is not None})
    add_source(plan, cfgs[0], d_in, layers)


def _manifest(source: Any) -> dict[str, Any]:
    import json

    path = Path(str(source)) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _npy_itemsize(path: Any) -> int:
    import numpy as np

    return np.load(path, mmap_mode="r", allow_pickle=False).dtype.itemsize


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --- limits --------------------------------------------------------------------------------


def available(plan: Plan) -> dict[Where, tuple[int, str]]:
    """(bytes free, what was measured) per kind of need, on this machine now."""
    out: dict[Where, tuple[int, str]] = {}
    path = Path(plan.disk_path).expanduser().resolve()
    while not path.exists():
        path = path.parent
    out["disk"] = (shutil.disk_usage(path).free, f"free disk at {path}")
    out["host"] = (host_available(), "available host RAM")
    if plan.device.startswith("cuda") and _cuda_count():
        import torch

        free = min(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
        out["device"] = (free, "free GPU memory (smallest GPU)")
    return out


def host_available() -> int:
    """Memory the OS can give without swapping (psutil: MemAvailable on Linux)."""
    import psutil

    return psutil.virtual_memory().available


def check(plan: Plan, limits: dict[Where, tuple[int, str]] | None = None) -> None:
    """PlanError naming the first limit the plan crosses; nothing when it fits."""
    limits = available(plan) if limits is None else limits
    for where in ("disk", "host", "device"):
        need = plan.total(where)
        if where in limits and need > limits[where][0]:
            have, what = limits[where]
            hint = plan.split(have) if where == "device" and plan.split else ""
            raise PlanError(f"plan: needs {human(need)} of {where} but {what} is {human(have)}"
                            f"{'; ' + hint if hint else ''} (see `sae-lab plan`; --no-plan-check "
                            "to run anyway)")


# --- a config file --------------------------------------------------------------------------


def plan_file(path: str, overrides: list[str] = (), gpus: int | None = None,
              gpu_memory: int | None = None) -> Plan:
    """The plan of a sweep, train or harvest YAML (told apart by their keys)."""
    from sae_lab.config import apply_overrides, load_yaml, parse

    p = Path(path)
    if not p.is_file():
        from sae_lab.sweep.schema import load_sweep

        return plan_sweep(load_sweep(path, list(overrides)), gpus, gpu_memory)  # in sweeps/
    data = apply_overrides(load_yaml(p.read_text(), str(p)) or {}, list(overrides))
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected a mapping at the top level")
    if "architectures" in data:
        from sae_lab.sweep.schema import load_sweep

        return plan_sweep(load_sweep(path, list(overrides)), gpus, gpu_memory)
    if {"model", "dataset", "out"} <= data.keys():
        from sae_lab.data.harvest import HarvestConfig

        return plan_harvest(parse(HarvestConfig, data, str(p)), gpus=gpus)
    from sae_lab.training.config import TrainConfig

    return plan_train(TrainConfig.from_dict(data, str(p)), gpus=gpus)


def limits_for(plan: Plan, gpus: int | None = None, disk: int | None = None,
               ram: int | None = None, gpu_memory: int | None = None
               ) -> dict[Where, tuple[int, str]]:
    """The limits to check `plan` against: this machine's (unless `gpus` names another one),
    with those given replacing them."""
    limits = {} if gpus is not None else available(plan)
    given: dict[Where, tuple[int | None, str]] = {
        "disk": (disk, "the disk given (--disk)"), "host": (ram, "the RAM given (--ram)"),
        "device": (gpu_memory, "the memory of one GPU given (--gpu-memory)")}
    limits.update({where: (have, what) for where, (have, what) in given.items()
                   if have is not None})
    return limits
