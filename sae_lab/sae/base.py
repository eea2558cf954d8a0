"""Parameters, encode/decode, save/load and bookkeeping shared by every architecture.

    pre   = (x - b_dec) @ W_enc + b_enc      # [B, d_sae]
    z     = act(pre)                         # [B, d_sae], sparse; act is the architecture's
    x_hat = z @ W_dec + b_dec                # [B, d_in]

With cfg.token_norm, x is first scaled to norm sqrt(d_in) (x * s, s = sqrt(d_in) / ||x||) and the
reconstruction scaled back (x_hat / s), as SAELens's constant_norm_rescale; `encode` takes raw x,
`decode(z, x)` gives x's units (so does `decode(z)` right after `encode`, which remembers s), and
`training_loss` takes x as `normalize_input` returns it.

Shapes are written `# [B, d_in]` in comments: B tokens, d_in activation width, d_sae latents.

A latent-sharded SAE (sae_lab.sae.sharded) holds d_sae of the cfg.latents latents: every sum over
latents goes through `latent_sum` and every selection across latents through `keep_top`, which
are identities on a whole SAE.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from sae_lab.files import atomic_dir, replace_dir  # noqa: F401  (re-exported)
from sae_lab.sae import sparse
from sae_lab.sae.config import ConfigError, SAEConfig
from sae_lab.sae.registry import architectures, parse_saved_sae_config
from sae_lab.version import __version__

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
# Training-only state: kept in Lightning checkpoints, left out of exported weights.
TRAINING_BUFFERS = ("tokens_since_fired",)


class TrainOutput(NamedTuple):
    """What one training forward pass gives the LightningModule."""

    loss: Tensor
    """Scalar to minimise."""
    x_hat: Tensor
    """Reconstruction, [B, d_in]."""
    l0: Tensor
    """Mean number of active latents per token."""
    fired: Tensor
    """[d_sae] bool: latents active on at least one token of the batch."""
    parts: dict[str, Tensor]
    """Named pieces for logging: mse, l1, and the architecture's own (sparsity, aux, k, ...)."""
    stats: dict[str, Tensor] | None = None
    """Batch statistics the SAE's `after_step` consumes (BatchTopK: the smallest kept value)."""


class SAE(nn.Module):
    """Base class. A subclass sets `config_cls` (its `name` comes from the config's architecture
    tag), implements `codes` and `training_loss`, registers itself (`@register`), and answers
    what the rest of sae_lab asks of an architecture through the class attributes below."""

    name: ClassVar[str]
    config_cls: ClassVar[type[SAEConfig]]
    uses: ClassVar[frozenset[str]] = frozenset()
    """Its own config fields (besides the shared ones); set by `register`."""
    searchable: ClassVar[frozenset[str]] = frozenset()
    """Config fields a sweep may search; set by `register` unless the class sets it."""
    k_based: ClassVar[bool] = False
    """L0 is fixed by k (TopK-like) rather than learned through a penalty."""
    dead_meaning: ClassVar[str] = "fired on none of the last sae.dead_tokens training tokens"
    """What `dead_frac` counts for this architecture, in words (for reports)."""
    saelens_architecture: ClassVar[str] = "standard"
    """The SAELens v6 architecture whose inference form equals this one's `encode` in eval."""
    unit_norm_decoder: ClassVar[bool] = True
    """Keep W_dec rows at unit norm after each step (False: the norm is in the penalty)."""
    has_b_enc: ClassVar[bool] = True
    step_buffers: ClassVar[dict[str, float]] = {"dense": 9.0, "eval": 4.5}
    """[B, d_sae] float32 buffers alive at the peak of a training step, by path ("dense",
    "sparse"), for `sae-lab plan`. Measured from peak RSS of a step (d_in 256, d_sae 16384,
    B 2048) against the sparse TopK path's one buffer; an unmeasured path counts as dense.
    "eval": the peak of a held-out evaluation batch (encode, decode, metrics; d_in 256, d_sae
    65,536, B 2048), unmeasured counts as 4.5."""

    def __init__(self, cfg: SAEConfig, metadata: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, self.config_cls):
            raise ConfigError(f"sae: {type(self).__name__} needs a {self.config_cls.__name__}, "
                              f"got {type(cfg).__name__}")
        if cfg.d_in <= 0:
            raise ConfigError("sae.d_in must be set (> 0) before building an SAE")
        self.cfg = cfg
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.source: Path | None = None
        """The directory `load` read it from; None when built in memory."""
        d_in, d_sae = cfg.d_in, cfg.latents
        dtype = getattr(torch, cfg.dtype)
        W_dec = torch.randn(d_sae, d_in, dtype=torch.float32)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dtype))  # [d_sae, d_in]
        self.W_enc = nn.Parameter(W_dec.T.clone().to(dtype))  # [d_in, d_sae]
        if self.has_b_enc:
            self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))
        self.shard: Any = None
        """The `sharded.LatentShard` this SAE is; None for a whole SAE in one process."""
        self._n_dead = 0  # dead latents of all shards at the last `dead_latents`

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        """Latents held here: all of cfg.latents, or this shard's part."""
        return self.cfg.latents if self.shard is None else self.shard.n_local

    @property
    def latent_offset(self) -> int:
        """Index, among all cfg.latents, of this SAE's latent 0 (0 unless sharded)."""
        return 0 if self.shard is None else self.shard.offset

    # --- the only places where latents held elsewhere enter (see sharded.py) -----------------

    def latent_sum(self, t: Tensor) -> Tensor:
        """t, a sum over this SAE's latents, summed over all latents (an all-reduce over the
        latent shards, gradient passed through unchanged); t itself in one process."""
        return t if self.shard is None else self.shard.latent_sum(t)

    def keep_top(self, values: Tensor, k: int, whole_batch: bool = False) -> Tensor | None:
        """Which of these candidates [B, m] (each row's m <= k largest here) are among the k
        largest of the row over all latent shards (whole_batch: values [1, m] of the whole
        batch, over every rank): a bool mask [B, m]; None (all of them) in one process."""
        return None if self.shard is None else self.shard.keep_top(values, k, whole_batch)

    def top_latents(self, pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(values, indices) [B, <= k]: the k largest entries of each row of pre over all
        latents, with the entries here that others beat set to 0."""
        m = min(k, pre.shape[1])  # a shard may hold fewer than k latents, or none
        values, indices = sparse.topk_rows(pre, m) if m else (
            pre[:, :0], torch.zeros(pre.shape[0], 0, dtype=torch.long, device=pre.device))
        keep = self.keep_top(values, k)
        return (values, indices) if keep is None else (values * keep, indices)

    def encoder_bias_grad(self) -> Tensor | None:
        """The column sums of the gradient of (x - b_dec) @ W_enc, [d_sae], from the biases'
        gradients after backward (sharded.py rebuilds b_dec's encoder gradient from them)."""
        return self.b_enc.grad

    # --- the maths every architecture shares -------------------------------------------------

    def pre_acts(self, x: Tensor) -> Tensor:
        return centred_matmul(x, self.b_dec, self.W_enc) + self.b_enc  # [B, d_sae]

    def pre_acts_of(self, x: Tensor, latents: Tensor) -> Tensor:
        """pre_acts of the given latents only, [B, len(latents)]."""
        return centred_matmul(x, self.b_dec, self.W_enc[:, latents]) + self.b_enc[latents]

    def token_scale(self, x: Tensor) -> Tensor | None:
        """[B, 1] factors s = sqrt(d_in) / ||x|| taking each token to norm sqrt(d_in) (float32; an
        all-zero token keeps s finite and stays zero); None without token_norm."""
        if not self.cfg.token_norm:
            return None
        norm = torch.linalg.vector_norm(x.float(), dim=-1, keepdim=True)
        return self.d_in**0.5 / norm.clamp_min(1e-6)

    def normalize_input(self, x: Tensor) -> Tensor:
        """x as the SAE's weights see it: each token at norm sqrt(d_in) with token_norm, else x."""
        s = self.token_scale(x)
        return x if s is None else (x * s).to(x.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """Sparse codes z, [B, d_sae], of raw activations x. With token_norm, each token's scale
        is remembered so that `decode(z)` without x can give x's units back (as SAELens does)."""
        s = self.token_scale(x)
        self._last_scale = None if s is None else s.detach()
        return self.codes(x if s is None else (x * s).to(x.dtype))

    def codes(self, x: Tensor) -> Tensor:
        """The architecture's sparse codes of x as `normalize_input` returns it, [B, d_sae]."""
        raise NotImplementedError

    def decode(self, z: Tensor, x: Tensor | None = None) -> Tensor:
        """Reconstruction from codes, [B, d_in], in the units of the raw activations. With
        token_norm, those are the units of x (the activations z was encoded from) when given,
        else of the last `encode`, whose tokens z must match; without either it is refused
        (`decode_normalized` gives the reconstruction at norm ~sqrt(d_in))."""
        x_hat = self.decode_normalized(z)
        if not self.cfg.token_norm:
            return x_hat
        s = self.token_scale(x) if x is not None else self._remembered_scale(z)
        return (x_hat / s).to(x_hat.dtype)

    def decode_normalized(self, z: Tensor) -> Tensor:
        """Reconstruction in the units `normalize_input` gives (what training compares),
        [B, d_in]."""
        return self.latent_sum(z @ self.W_dec) + self.b_dec

    def _remembered_scale(self, z: Tensor) -> Tensor:
        s = getattr(self, "_last_scale", None)
        if s is None or s.shape[:-1] != z.shape[:-1] or s.device != z.device:
            got = "no encode came before" if s is None else \
                f"the last encode had {tuple(s.shape[:-1])} tokens, z has {tuple(z.shape[:-1])}"
            raise ValueError(f"decode(z) of a token_norm SAE needs the activations z came from: "
                             f"call decode(z, x) ({got})")
        return s

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x), x)

    def training_loss(self, x: Tensor, step: int, sparsity_scale: float = 1.0) -> TrainOutput:
        """Loss and its named parts on a batch x (as `normalize_input` returns it; x_hat in the
        same units); `sparsity_scale` in [0, 1] warms lambda up."""
        raise NotImplementedError

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups; an architecture whose extras need their own learning rate
        splits them off here."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def extra_metrics(self, step: int) -> dict[str, float]:
        """Scalars worth logging besides the loss parts (current k, threshold, ...)."""
        return {}

    @torch.no_grad()
    def after_step(self, out: TrainOutput, step: int) -> None:
        """Training state updated after each training batch (never inside `encode`, which is
        pure): here the dead-latent counters; subclasses add their own (thresholds, ...)."""
        self.update_dead(out.fired, out.x_hat.shape[0])

    # --- SAELens export: the inference form in SAELens v6's terms ----------------------------

    def saelens_cfg(self) -> dict[str, Any]:
        """Architecture-specific cfg.json fields of the SAELens export."""
        return {}

    @torch.no_grad()
    def saelens_tensors(self) -> dict[str, Tensor]:
        """The SAELens state dict: names and shapes of `saelens_architecture`."""
        return {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}

    # --- bookkeeping ---------------------------------------------------------------------------

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """b_dec at the geometric median of a sample (Bricken et al. 2023)."""
        self.b_dec.copy_(geometric_median(x.to(self.b_dec.dtype)))

    @torch.no_grad()
    def init_near_data(self, x: Tensor) -> None:
        """Scale the initial weights (or thresholds) on a sample x [B, d_in] (as
        `normalize_input` returns it) so that the step-0 reconstruction is near the data. The
        random start, unit rows with W_enc = W_dec^T, reconstructs x - b_dec about
        d_sae / (2 d_in) times too large under ReLU (half the latents fire): FVU ~59 on MiniLM
        layer 3 at d_sae 6144. Architectures whose start is already near (TopK) keep it."""

    @torch.no_grad()
    def fit_scale(self, x: Tensor) -> float:
        """The factor a minimising ||(x - b_dec) - a (x_hat - b_dec)||^2 over the sample, where
        x_hat is the current reconstruction: the least-squares scale of the step-0 output."""
        v = x.to(self.b_dec.dtype) - self.b_dec
        r = self.decode_normalized(self.codes(x.to(self.b_dec.dtype))) - self.b_dec
        rr = r.pow(2).sum()
        return float(torch.linalg.vecdot(v, r).sum() / rr) if rr > 0 else 1.0

    @torch.no_grad()
    def update_dead(self, fired: Tensor, n_tokens: int) -> None:
        if self.shard is not None:  # fired on any data rank's tokens
            fired, n_tokens = self.shard.fired_anywhere(fired, n_tokens)
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired] = 0

    def dead_latents(self) -> Tensor | None:
        """Indices [n_dead] of the dead latents; None when none is dead or the AuxK loss is off
        (aux_coef 0, or an architecture without one)."""
        if getattr(self.cfg, "aux_coef", 0) == 0:
            return None
        dead = self.dead_mask.nonzero().squeeze(1)
        # a shard may hold none of the dead latents while others do: it still takes part
        self._n_dead = dead.numel() if self.shard is None else self.shard.count(dead.numel())
        return dead if self._n_dead else None

    def _dead_block(self, pre: Tensor, dead: Tensor) -> Tensor:
        return pre if dead.numel() == self.d_sae else pre.index_select(1, dead)  # [B, n_dead]

    def _k_aux(self) -> int:
        """k_aux for the dead latents of the last `dead_latents` (all shards together)."""
        return min(self.cfg.k_aux or self.d_in // 2, self._n_dead)

    def dead_fraction(self) -> Tensor:
        """The fraction of all latents that are dead (`dead_mask`'s mean over every shard)."""
        frac = self.dead_mask.float().mean()
        return frac if self.shard is None else self.shard.latent_mean(frac)

    def select_dead(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """AuxK's selection (values, j, dead): values [B, k_aux] the largest pre-activations
        among the dead latents dead [n_dead], ReLU'd, at dead[j]; None when dead_latents is."""
        dead = self.dead_latents()
        if dead is None:
            return None
        values, j = self.top_latents(self._dead_block(pre, dead), self._k_aux())
        return values.relu(), j, dead

    def dead_aux_loss(self, dead_pre: Callable[[Tensor], Tensor], x: Tensor,
                      x_hat: Tensor) -> Tensor:
        """AuxK for the penalty architectures (Gao et al. 2024, A.2): the k_aux largest
        would-be activations among dead latents reconstruct the residual x - x_hat (no gradient
        to the main path); 0 while no latent is dead. dead_pre(dead) gives those would-be
        activations [B, n_dead]: a slice of a dense step's pre-activations, or computed for the
        dead columns alone on the sparse path (same values and gradients)."""
        dead = self.dead_latents()
        if dead is None:
            return x.new_zeros(())
        block = dead_pre(dead)  # [B, n_dead]
        kept, j = self.top_latents(block.detach(), self._k_aux())
        z = torch.zeros_like(block).scatter(1, j, block.gather(1, j).relu() * (kept != 0))
        all_dead = dead.numel() == self.d_sae
        W_dec = self.W_dec if all_dead else self.W_dec.index_select(0, dead)  # [n_dead, d_in]
        e_hat = self.latent_sum(z @ W_dec)  # [B, d_in]
        return (e_hat - (x - x_hat).detach()).pow(2).sum(dim=-1).mean()

    @property
    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents that fired on none of the last `cfg.dead_tokens` tokens."""
        return self.tokens_since_fired >= self.cfg.dead_tokens

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Drop the part of W_dec's gradient that would change row norms (Bricken et al. 2023)."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            W, g = self.W_dec, self.W_dec.grad
            proj = torch.linalg.vecdot(g, W) / torch.linalg.vecdot(W, W)  # [d_sae]
            g.addcmul_(proj[:, None], W, value=-1)

    @torch.no_grad()
    def fold_input_scale(self, scale: float) -> None:
        """Make the SAE act on raw x when it was trained on x * scale.

        z is unchanged: (s x - b) W = (x - b/s)(s W), and x_hat / s = z (W_dec / s) + b_dec / s.
        With token_norm there is nothing to fold: every token is rescaled to norm sqrt(d_in)
        before the weights see it, whatever the scale.
        """
        if self.cfg.token_norm:
            return
        self.W_enc *= scale
        self.W_dec /= scale
        self.b_dec /= scale
        self._fold_extra(scale)

    def _fold_extra(self, scale: float) -> None:
        """Architectures with more encoder weights fold them here."""

    # --- save / load ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write cfg.json and sae_weights.safetensors atomically (temporary dir, then rename)."""
        with atomic_dir(directory) as tmp:
            tensors = {
                k: v.detach().contiguous().cpu()
                for k, v in self.state_dict().items()
                if k not in TRAINING_BUFFERS
            }
            save_file(tensors, tmp / WEIGHTS_FILE)
            cfg = {"sae": self.cfg.to_dict(), "metadata": self.metadata}
            cfg["sae_lab_version"] = _version()
            (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
        return Path(directory)


def load(directory: str | os.PathLike, device: str | torch.device = "cpu") -> SAE:
    """Rebuild an SAE saved with `SAE.save`; the class comes from cfg.json. A file that cannot be
    read, or weights whose shapes differ from what cfg.json describes, is a one-line ValueError
    naming the file."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE} (not an sae_lab SAE directory)")
    try:
        raw = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
    cfg = parse_saved_sae_config(raw["sae"])
    sae = architectures()[cfg.architecture](cfg, metadata=raw.get("metadata"))
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_FILE}")
    state = read_weights(weights_path)
    _check_shapes(sae, state, weights_path, cfg_path)
    missing, unexpected = sae.load_state_dict(state, strict=False)
    missing = [m for m in missing if m not in TRAINING_BUFFERS]
    if missing or unexpected:
        raise ValueError(f"{weights_path}: missing tensors {missing}, unexpected {unexpected}")
    sae.source = directory.resolve()
    return sae.to(device)


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a file that is not one is a one-line ValueError."""
    from safetensors import SafetensorError

    try:
        return load_file(path)
    except SafetensorError as e:
        raise ValueError(f"{path}: not a safetensors file / corrupt header ({e})") from e


def _check_shapes(sae: SAE, state: dict[str, Tensor], weights_path: Path,
                  cfg_path: Path) -> None:
    expected = sae.state_dict()
    for name, tensor in state.items():
        want = expected.get(name)
        if want is not None and want.shape != tensor.shape:
            raise ValueError(
                f"{weights_path}: {name} is {list(tensor.shape)} but {cfg_path} (d_in "
                f"{sae.d_in}, d_sae {sae.d_sae}) describes {list(want.shape)}; the config and "
                "the weights are of different SAEs")


def centred_matmul(x: Tensor, b_dec: Tensor, W: Tensor) -> Tensor:
    """(x - b_dec) @ W, [B, n], with b_dec's gradient taken as -W @ (column sums of the output's
    gradient), an O(d_in * n) product. Written plainly, autograd gets it through the gradient of
    x - b_dec, a full [B, n] @ [n, d_in] product: one of the six products of a dense ReLU step
    (profiled, d_sae 6144, B 4096). b_dec enters through a zero-valued [n] term instead, so the
    values are the plain expression's, bit for bit."""
    out = (x - b_dec.detach()) @ W
    if b_dec.requires_grad and torch.is_grad_enabled():
        out = out + (b_dec.detach() - b_dec) @ W  # == 0; d/d b_dec = -W
    return out


@torch.no_grad()
def geometric_median(x: Tensor, iters: int = 50, eps: float = 1e-8) -> Tensor:
    """Weiszfeld's algorithm over the rows of x, [N, d] -> [d]."""
    m = x.mean(dim=0)
    for _ in range(iters):
        w = 1 / (x - m).norm(dim=1).clamp_min(eps)
        new = (w[:, None] * x).sum(dim=0) / w.sum()
        if (new - m).norm() <= 1e-6 * m.norm().clamp_min(1.0):
            return new
        m = new
    return m


def _version() -> str:
    return __version__
