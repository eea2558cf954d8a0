"""Held-out evaluation of an SAE, and the downstream loss with its reconstruction spliced in.

Reconstruction metrics, exact over the whole evaluation set (streamed sums, no batch averages):

    FVU      = sum ||x - x_hat||^2 / sum ||x - mean||^2      mean over the whole set
    MSE      = sum ||x - x_hat||^2 / (N * d_in)
    cos      = mean_tokens cos(x, x_hat)
    L0, L1   = mean_tokens ||z||_0, ||z||_1
    l2_ratio = mean_tokens ||x_hat|| / ||x||                 < 1: reconstructions are short
    rel_bias = sum ||x_hat||^2 / sum <x, x_hat>              Gated SAE paper (arXiv 2404.16014)
               eq. 10: gamma = argmin_g E||x_hat / g - x||^2; < 1 means shrinkage, 1 none
    density  = fraction of tokens on which each latent fires
    unfired_frac = share of latents that fired on no token of the set; not dead_frac, which
               training reports: fired on none of the last sae.dead_tokens training tokens

Downstream loss (causal LMs; Bloom et al.'s "CE loss score", SAEBench's KL score):

    CE_clean, CE_sae, CE_zero   next-token cross-entropy clean, with x_hat spliced in at the
                                hook, with the hook zero-ablated
    ce_score = (CE_zero - CE_sae) / (CE_zero - CE_clean)      1: as good as clean, 0: as zeros
    delta_ce = CE_sae - CE_clean
    kl_score = (KL_zero - KL_sae) / KL_zero,  KL_* = mean_tokens KL(p_clean || p_*)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sae_lab.files import atomic_file, atomic_write_json
from sae_lab.lm.load import is_causal, load_lm, resolve_device

if TYPE_CHECKING:  # torch is imported inside the functions: `sae-lab eval --help` stays fast
    import torch
    from torch import Tensor, nn

    from sae_lab.sae.base import SAE

EVAL_JSON = "eval.json"
UNFIRED_FRAC = "unfired_frac"
"""Share of latents that fired on no token of the evaluated rows (training's dead_frac is
another measure: none of the last sae.dead_tokens training tokens)."""
FIRED_FRAC = "fired_frac"
DENSITY_FILE = "feature_density.safetensors"
DENSITY_PNG = "feature_density.png"


class EvalStats:
    """Sums that give every reconstruction metric of the module docstring over a whole set."""

    def __init__(self, d_sae: int) -> None:
        import torch

        from sae_lab.training.metrics import ReconStats

        self.recon = ReconStats()
        self.n = 0
        self.fires = torch.zeros(d_sae, dtype=torch.long)
        self.sum_sq_xhat = 0.0
        self.sum_dot = 0.0
        self.sum_ratio = 0.0

    def update(self, x: Tensor, x_hat: Tensor, z: Tensor) -> None:
        x, x_hat, z = x.detach(), x_hat.detach(), z.detach()
        self.recon.update(x, x_hat, z)
        x, x_hat = x.double(), x_hat.double()
        self.n += x.shape[0]
        self.fires += (z != 0).sum(dim=0).cpu()
        self.sum_sq_xhat += x_hat.pow(2).sum().item()
        self.sum_dot += (x * x_hat).sum().item()
        ratio = x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)  # [B]
        self.sum_ratio += ratio.sum().item()

    @property
    def density(self) -> Tensor:
        """[d_sae] fraction of tokens on which each latent fired."""
        return self.fires.double() / max(self.n, 1)

    def compute(self) -> dict[str, float]:
        m = self.recon.compute()
        unfired = float((self.fires == 0).double().mean())
        m.update({
            "l2_ratio": self.sum_ratio / self.n,
            "rel_bias": self.sum_sq_xhat / self.sum_dot if self.sum_dot else float("nan"),
            UNFIRED_FRAC: unfired,
            FIRED_FRAC: 1.0 - unfired,
            "tokens": float(self.n),
        })
        return m


class EvalResult(NamedTuple):
    metrics: dict[str, float]
    """fvu, mse, cos, l0, l1, l2_ratio, rel_bias, unfired_frac, fired_frac, tokens."""
    density: Tensor
    """[d_sae] fraction of evaluation tokens on which each latent fired."""


def evaluate_sae(sae: SAE, batches: Iterable[Tensor], device: str | torch.device = "cpu"
                 ) -> EvalResult:
    """Stream [B, d_in] activation batches through `sae` (in eval mode) and sum the metrics."""
    from sae_lab.training.metrics import stream_stats

    stats = stream_stats(sae.to(device), batches, EvalStats(sae.d_sae))
    if stats.n == 0:
        raise ValueError("no activations to evaluate (empty shards?)")
    return EvalResult(stats.compute(), stats.density)


def density_histogram(density: Tensor, path: str | os.PathLike, title: str = "") -> Path:
    """PNG histogram of log10 feature density; dead latents are counted in the caption."""
    from matplotlib.figure import Figure  # Figure + savefig uses Agg: no display, no pyplot

    density = density.double().cpu()
    alive = density[density > 0]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    if alive.numel():
        ax.hist(alive.log10().numpy(), bins=50, color="#3b6ea5")
    ax.set_xlabel("log10 feature density (fraction of tokens firing)")
    ax.set_ylabel("latents")
    n_dead = int((density == 0).sum())
    ax.set_title(f"{title}  ({n_dead} of {density.numel()} latents never fired)".strip())
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, format="png")
    return path


def unfired_note(sae: SAE) -> str:
    """The line that tells the evaluation's unfired_frac from training's dead_frac."""
    return (f"{UNFIRED_FRAC}: share of latents that fired on no token of the evaluated rows "
            f"(training's dead_frac counts a {sae.cfg.architecture} latent dead once it "
            f"{sae.dead_meaning})")


def format_table(metrics: dict[str, float]) -> str:
    """Two aligned columns, one metric per line."""
    width = max(len(k) for k in metrics)
    lines = []
    for k, v in metrics.items():
        value = f"{v:.0f}" if k == "tokens" else f"{v:.6g}"
        lines.append(f"{k:<{width}}  {value}")
    return "\n".join(lines)


def save_report(out_dir: str | os.PathLike, metrics: dict[str, Any],
                density: Tensor | None = None) -> Path:
    """eval.json; with a density also feature_density.safetensors and feature_density.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / EVAL_JSON, metrics)
    if density is not None:
        from safetensors.torch import save_file

        with atomic_file(out / DENSITY_FILE) as tmp:
            save_file({"density": density.float().contiguous()}, tmp)
        with atomic_file(out / DENSITY_PNG) as tmp:
            density_histogram(density, tmp)
    return out


def shard_activations(source: str | os.PathLike, batch_size: int = 4096,
                      max_tokens: int | None = None, shards: list[str] | None = None,
                      skipped: dict[str, int] | None = None) -> Iterator[Tensor]:
    """[B, d_in] batches of a shard set's rows (or of the named shards), in corpus order, up to
    max_tokens rows.

    Rows holding NaN or Inf are an error naming the shard, unless `skipped` is given: then they
    are left out and counted in skipped["rows"].
    """
    import torch

    from sae_lab.data.shards import iter_blocks

    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size={batch_size} and max_tokens={max_tokens} must be >= 1")
    seen = 0
    for block in iter_blocks(source, shards):
        acts = block["acts"]
        if max_tokens is not None:
            acts = acts[: max_tokens - seen]
        finite = torch.isfinite(acts).all(dim=1)  # [n]
        if not bool(finite.all()):
            bad = int((~finite).sum())
            if skipped is None:
                raise ValueError(
                    f"shard {block['shard']}, block {block['block']}: {bad} row(s) hold NaN or "
                    "Inf; pass --skip-nonfinite to leave such rows out (they are counted)")
            skipped["rows"] = skipped.get("rows", 0) + bad
            seen += acts.shape[0]
            acts = acts[finite]
            if acts.shape[0]:
                yield from acts.split(batch_size)
            if max_tokens is not None and seen >= max_tokens:
                return
            continue
        yield from acts.split(batch_size)
        seen += acts.shape[0]
        if max_tokens is not None and seen >= max_tokens:
            return


# --- downstream loss -------------------------------------------------------------------------


class _Sums:
    def __init__(self) -> None:
        self.ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
        self.kl = {"sae": 0.0, "zero": 0.0}
        self.ce_tokens = 0
        self.kl_tokens = 0


def downstream_loss(
    model: nn.Module,
    batches: Iterable[Any],
    layer: int,
    hook: str,
    reconstruct: Callable[[Tensor], Tensor],
    d_in: int | None = None,
) -> dict[str, float]:
    """CE clean / with `reconstruct(activation)` spliced in / zero-ablated, and the scores.

    `batches` are token ids [B, T] without padding, or objects with `.input_ids` and `.keep`
    ([B, T] bool, like data.text.WindowBatch): then only kept positions are edited, so added
    BOS/EOS tokens, which the SAE never saw in training, keep their activations. `reconstruct`
    maps [B, T, d] -> [B, T, d] (an SAE's forward pass). Averages are over every predicted token.
    """
    import torch

    with torch.no_grad():
        s = _downstream_sums(model, batches, layer, hook, reconstruct, d_in)
    if s.ce_tokens == 0:
        raise ValueError("no tokens to score (sequences need at least 2 tokens)")
    ce = {k: v / s.ce_tokens for k, v in s.ce.items()}
    kl = {k: v / s.kl_tokens for k, v in s.kl.items()}
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_score": _ratio(ce["zero"] - ce["sae"], ce["zero"] - ce["clean"]),
        "delta_ce": ce["sae"] - ce["clean"],
        "kl_sae": kl["sae"],
        "kl_zero": kl["zero"],
        "kl_score": _ratio(kl["zero"] - kl["sae"], kl["zero"]),
        "downstream_tokens": float(s.kl_tokens),
    }


def _downstream_sums(model: nn.Module, batches: Iterable[Any], layer: int, hook: str,
                     reconstruct: Callable[[Tensor], Tensor], d_in: int | None) -> _Sums:
    import torch
    from torch import Tensor

    from sae_lab.lm.splice import edit_activation

    model.eval()
    device = next(model.parameters()).device
    s = _Sums()
    for item in batches:
        ids, keep = (item, None) if isinstance(item, Tensor) else (item.input_ids, item.keep)
        ids = ids.to(device)
        keep = None if keep is None else keep.to(device)[..., None]  # [B, T, 1]
        logp_clean = _log_probs(model, ids)  # [B, T, V]
        s.ce["clean"] += _ce_sum(logp_clean, ids)
        for name, fn in (("sae", reconstruct), ("zero", torch.zeros_like)):
            edit = fn if keep is None else _masked(fn, keep)
            with edit_activation(model, layer, hook, edit, d_in=d_in):
                logp = _log_probs(model, ids)
            s.ce[name] += _ce_sum(logp, ids)
            kl = (logp_clean.exp() * (logp_clean - logp)).sum(dim=-1)  # [B, T]
            s.kl[name] += kl.double().sum().item()
        s.ce_tokens += ids[:, 1:].numel()
        s.kl_tokens += ids.numel()
    return s


def _masked(fn: Callable[[Tensor], Tensor], keep: Tensor) -> Callable[[Tensor], Tensor]:
    import torch

    return lambda act: torch.where(keep, fn(act).to(act.dtype), act)


def sae_reconstruct(sae: SAE) -> Callable[[Tensor], Tensor]:
    """act [B, T, d] -> the SAE's reconstruction, computed in the SAE's dtype."""
    sae.eval()

    def fn(act: Tensor) -> Tensor:
        flat = act.reshape(-1, act.shape[-1]).to(sae.W_enc.dtype)  # SAEs take [N, d_in]
        return sae(flat).view(act.shape)

    return fn


def dataset_batches(dataset: str, tokenizer: Any, ctx_len: int, n_seqs: int, batch_size: int,
                    text_column: str = "text", split: str = "train") -> list[Any]:
    """Up to n_seqs windows of `dataset`, cut and wrapped exactly as the harvest cuts them."""
    from sae_lab.data.text import iter_texts, window_batches
    texts = iter_texts(dataset, split=split, text_column=text_column)
    out, n = [], 0
    for batch in window_batches(texts, tokenizer, ctx_len, batch_size):
        if batch.input_ids.shape[1] < 2:
            continue
        take = min(batch.input_ids.shape[0], n_seqs - n)
        out.append(_head(batch, take))
        n += take
        if n >= n_seqs:
            break
    if not out:
        raise ValueError(f"dataset {dataset}: no text to score")
    return out


def _head(batch: Any, n: int) -> Any:
    from sae_lab.data.text import WindowBatch
    return WindowBatch(batch.input_ids[:n], batch.keep[:n], batch.doc[:n], batch.pos[:n])


def _log_probs(model: nn.Module, ids: Tensor) -> Tensor:
    return model(input_ids=ids).logits.float().log_softmax(dim=-1)


def _ce_sum(logp: Tensor, ids: Tensor) -> float:
    import torch.nn.functional as F

    target = ids[:, 1:]
    nll = F.nll_loss(logp[:, :-1].flatten(0, 1), target.flatten(), reduction="sum")
    return nll.double().item()


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else float("nan")


# --- an SAE directory, end to end (`sae-lab eval`) ------------------------------------------


class EvalReport(NamedTuple):
    sae: SAE
    metrics: dict[str, float]
    """reconstruction metrics (with shards), downstream loss (with a dataset), or both"""
    density: Tensor | None
    """per-latent firing frequency over the evaluated rows (with shards)"""


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def evaluate_dir(sae_dir: str | os.PathLike, shards: str | None = None,
                 dataset: str | None = None, *, last_shards: int | None = None,
                 max_tokens: int | None = None, batch_size: int = 4096,
                 skip_nonfinite: bool = False, model: str | None = None,
                 text_column: str = "text", split: str = "train", ctx_len: int | None = None,
                 n_seqs: int = 64, lm_batch_size: int = 8, layer: int | None = None,
                 hook: str | None = None, device: str = "auto",
                 warn: Callable[[str], None] = _warn) -> EvalReport:
    """Reconstruction metrics of the SAE in `sae_dir` over `shards` (its last `last_shards`
    shards only, when given) and/or the model's loss with it spliced in, on `dataset`."""
    from sae_lab.data.shards import read_manifest
    from sae_lab.lm.attach import check_shards, hook_point, load_sae_dir, model_name

    if not shards and not dataset:
        raise ValueError("nothing to evaluate: give --shards (reconstruction metrics) and/or "
                         "--dataset (downstream loss)")
    device = resolve_device(device)
    sae = load_sae_dir(sae_dir, device)
    metrics: dict[str, float] = {}
    density = None
    if shards:
        manifest = read_manifest(shards)
        for w in check_shards(sae, manifest, shards):
            warn(w)
        names = None
        if last_shards:
            names = [e["name"] for e in manifest["shards"]]
            if last_shards > len(names):
                raise ValueError(f"--last-shards {last_shards}: shards {shards} hold only "
                                 f"{len(names)} shard(s)")
            names = names[-last_shards:]
        elif _same_path(sae.metadata.get("source"), shards):
            warn("these are the shards the SAE was trained on; pass --last-shards N (its "
                 "data.val_shards) to evaluate on held-out rows only")
        skipped = {"rows": 0} if skip_nonfinite else None
        result = evaluate_sae(sae, shard_activations(shards, batch_size, max_tokens, names,
                                                     skipped), device)
        metrics.update(result.metrics)
        if skipped is not None:
            metrics["nonfinite_rows"] = float(skipped["rows"])
        density = result.density
    if dataset:
        name = model_name(sae, model)
        lm, tokenizer = load_lm(name, device)
        if not is_causal(lm.config):
            raise ValueError(f"model {name} is not a causal LM; the downstream loss needs one")
        layer, hook = hook_point(sae, layer, hook)
        ctx_len = ctx_len or sae.metadata.get("ctx_len") or 128
        seqs = dataset_batches(dataset, tokenizer, ctx_len, n_seqs, lm_batch_size, text_column,
                               split)
        metrics.update(downstream_loss(lm, seqs, layer, hook, sae_reconstruct(sae), sae.d_in))
    return EvalReport(sae, metrics, density)


def _same_path(a: Any, b: Any) -> bool:
    if not a or not b:
        return False
    try:
        return Path(str(a)).resolve() == Path(str(b)).resolve()
    except OSError:
        return False
