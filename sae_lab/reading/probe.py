"""Linear probes on SAE latents, against the same probe on raw activations.

    features   each text -> activations at the SAE's hook, mean- or max-pooled over its tokens
               (special tokens left out), and the SAE's latents pooled the same way
    probes     logistic regression on all latents; k-sparse: on the k latents whose class means
               differ most on the training split; the same on the raw activations; a prototype
               classifier (nearest class centroid in latent space)
    metrics    held-out accuracy and AUROC, each with a percentile bootstrap 95% interval over
               the test texts

Labels are binary: the jsonl file's two distinct `label` values (the positive class is the
second in sorted order unless named).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sae_lab.files import atomic_file, atomic_write_json, jsonl_rows

if TYPE_CHECKING:  # torch is imported by the functions that run it: `--help` stays fast
    import torch
    from torch import nn

    from sae_lab.sae.base import SAE

PROBE_JSON, PROBE_PNG = "probe.json", "probe.png"


class Labelled(NamedTuple):
    texts: list[str]
    y: np.ndarray
    """[N] 0/1, 1 = `labels[1]`."""
    labels: tuple[Any, Any]


def read_labelled(path: str | os.PathLike, positive: str | None = None) -> Labelled:
    """A jsonl file of {"text": str, "label": any scalar}; exactly two distinct labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    texts, raw = [], []
    for where, row in jsonl_rows(path):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
                or "label" not in row or isinstance(row["label"], (dict, list)):
            raise ValueError(f"{where}: expected an object with a string \"text\" and a scalar "
                             "\"label\"")
        texts.append(row["text"])
        raw.append(row["label"])
    values = sorted({json.dumps(v) for v in raw})
    if len(values) != 2:
        raise ValueError(f"{path}: probes need exactly 2 distinct labels, found {len(values)}: "
                         f"{', '.join(values[:5])}")
    labels = tuple(json.loads(v) for v in values)
    if positive is not None:
        match = [v for v in labels if str(v) == positive]
        if not match:
            raise ValueError(f"--positive {positive}: not a label of {path} "
                             f"({labels[0]!r}, {labels[1]!r})")
        labels = (labels[0], labels[1]) if match[0] == labels[1] else (labels[1], labels[0])
    y = np.array([int(json.dumps(v) == json.dumps(labels[1])) for v in raw])
    return Labelled(texts, y, labels)  # type: ignore[arg-type]


class Features(NamedTuple):
    raw: np.ndarray
    """[N, d_in] pooled activations at the hook."""
    latents: np.ndarray
    """[N, d_sae] pooled SAE latents."""


def text_features(model: nn.Module, tokenizer: Any, sae: SAE, texts: list[str], layer: int,
                  hook: str, pool: str = "mean", batch_size: int = 16, max_length: int = 128
                  ) -> Features:
    """Pooled activations and latents of each text (special tokens left out, as in harvest)."""
    import torch

    with torch.no_grad():
        return _text_features(model, tokenizer, sae, texts, layer, hook, pool, batch_size,
                              max_length)


def _text_features(model: nn.Module, tokenizer: Any, sae: SAE, texts: list[str], layer: int,
                   hook: str, pool: str, batch_size: int, max_length: int) -> Features:
    import torch

    from sae_lab.lm.hooks import capture, run_to_hooks

    if pool not in ("mean", "max"):
        raise ValueError(f"unknown pooling {pool!r}; choose mean or max")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    raw, lat = [], []
    for s in range(0, len(texts), batch_size):
        enc = [tokenizer(t, truncation=True, max_length=max_length,
                         return_special_tokens_mask=True) for t in texts[s : s + batch_size]]
        T = max(len(e["input_ids"]) for e in enc)
        ids = torch.full((len(enc), T), pad, dtype=torch.long)
        mask = torch.zeros(len(enc), T, dtype=torch.long)
        keep = torch.zeros(len(enc), T, dtype=torch.bool)
        for i, e in enumerate(enc):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            mask[i, :n] = 1
            special = torch.tensor(e.get("special_tokens_mask", [0] * n), dtype=torch.bool)
            keep[i, :n] = ~special if not special.all() else True  # a text of specials only
        with capture(model, [layer], hook) as acts:
            run_to_hooks(model, input_ids=ids.to(device), attention_mask=mask.to(device))
        x = acts[layer].float()  # [B, T, d_in]
        if x.shape[-1] != sae.d_in:
            raise ValueError(f"SAE d_in={sae.d_in} does not match layer {layer} {hook} width "
                             f"{x.shape[-1]}")
        z = sae.encode(x.reshape(-1, x.shape[-1]).to(sae.W_enc.dtype)).float()
        z = z.view(*x.shape[:2], -1)  # [B, T, d_sae]
        k = keep.to(x.device)[..., None]
        raw.append(_pool(x, k, pool))
        lat.append(_pool(z, k, pool))
    return Features(torch.cat(raw).cpu().numpy(), torch.cat(lat).cpu().numpy())


def _pool(x: torch.Tensor, keep: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "mean":
        return (x * keep).sum(1) / keep.sum(1).clamp_min(1)
    return x.masked_fill(~keep, float("-inf")).amax(1)


def top_differing(z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k latents whose class means differ most (|mean_1 - mean_0|)."""
    gap = np.abs(z[y == 1].mean(0) - z[y == 0].mean(0))
    return np.argsort(-gap, kind="stable")[:k]


def logistic_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    seed: int = 0) -> np.ndarray:
    """Held-out P(y=1) of an L2-regularised logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=seed))
    clf.fit(x_train, y_train)
    return clf.predict_proba(x_test)[:, 1]


def prototype_scores(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray
                     ) -> np.ndarray:
    """||z - c_0|| - ||z - c_1||: positive when the text is nearer the class-1 centroid."""
    c0, c1 = z_train[y_train == 0].mean(0), z_train[y_train == 1].mean(0)
    return np.linalg.norm(z_test - c0, axis=1) - np.linalg.norm(z_test - c1, axis=1)


@dataclass
class Score:
    accuracy: float
    accuracy_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]


def score(y: np.ndarray, s: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0
          ) -> Score:
    """Accuracy of `s > threshold` and AUROC of `s`, with percentile bootstrap 95% intervals
    (resamples that hold a single class are skipped for AUROC)."""
    from sklearn.metrics import roc_auc_score

    correct = ((s > threshold).astype(int) == y).astype(float)
    rng = np.random.default_rng(seed)
    accs, aucs = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        accs.append(correct[i].mean())
        if 0 < y[i].sum() < len(i):
            aucs.append(roc_auc_score(y[i], s[i]))

    def ci(v: list[float]) -> tuple[float, float]:
        if not v:
            return (float("nan"), float("nan"))
        lo, hi = np.percentile(v, [2.5, 97.5])
        return (round(float(lo), 4), round(float(hi), 4))

    return Score(round(float(correct.mean()), 4), ci(accs), round(float(roc_auc_score(y, s)), 4),
                 ci(aucs))


def run_probes(feats: Features, y: np.ndarray, ks: list[int], test_fraction: float = 0.3,
               n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every probe on one stratified train/test split; a JSON-ready dict."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    except ValueError as e:
        raise ValueError(f"cannot split {len(y)} texts for probing ({e})") from None
    z, x = feats.latents, feats.raw
    probes: dict[str, Any] = {}

    def add(name: str, s: np.ndarray, threshold: float, **extra: Any) -> None:
        probes[name] = {**score(y[te], s, threshold, n_boot, seed).__dict__, **extra}

    add("latents_all", logistic_scores(z[tr], y[tr], z[te], seed), 0.5, features=z.shape[1])
    for k in ks:
        if k >= z.shape[1]:
            continue
        keep = top_differing(z[tr], y[tr], k)
        add(f"latents_top{k}", logistic_scores(z[tr][:, keep], y[tr], z[te][:, keep], seed), 0.5,
            features=k, latents=keep.tolist())
    add("raw_activations", logistic_scores(x[tr], y[tr], x[te], seed), 0.5, features=x.shape[1])
    add("prototype", prototype_scores(z[tr], y[tr], z[te]), 0.0, features=z.shape[1])
    majority = max(y[te].mean(), 1 - y[te].mean())
    return {"n_train": len(tr), "n_test": len(te), "chance_accuracy": round(float(majority), 4),
            "probes": probes}


def plot(result: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Held-out accuracy and AUROC per probe, 95% intervals as whiskers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["probes"])
    fig = Figure(figsize=(6.4, 0.45 * len(names) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    pos = np.arange(len(names))
    for off, key, color in ((-0.2, "accuracy", "#4c78a8"), (0.2, "auroc", "#f58518")):
        v = np.array([result["probes"][n][key] for n in names])
        lo = np.array([result["probes"][n][f"{key}_ci"][0] for n in names])
        hi = np.array([result["probes"][n][f"{key}_ci"][1] for n in names])
        ax.barh(pos + off, v, height=0.4, color=color, label=key,
                xerr=np.stack([v - lo, hi - v]).clip(0), capsize=2)
    ax.axvline(0.5, color="#888", lw=0.8, ls="--")
    ax.set_yticks(pos, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("held-out score (95% bootstrap interval)")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'probe':<16} {'features':>8}  {'accuracy [95% CI]':<22} AUROC [95% CI]"]
    for name, p in result["probes"].items():
        acc = f"{p['accuracy']:.3f} [{p['accuracy_ci'][0]:.3f}, {p['accuracy_ci'][1]:.3f}]"
        auc = f"{p['auroc']:.3f} [{p['auroc_ci'][0]:.3f}, {p['auroc_ci'][1]:.3f}]"
        lines.append(f"{name:<16} {p['features']:>8}  {acc:<22} {auc}")
    lines.append(f"{result['n_train']} training / {result['n_test']} held-out texts; "
                 f"majority-class accuracy {result['chance_accuracy']:.3f}")
    return "\n".join(lines)


def probe_dir(sae_dir: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
              positive: str | None = None, pool: str = "mean", ks: Sequence[int] = (1, 8, 32),
              test_fraction: float = 0.3, bootstrap: int = 1000, max_length: int = 128,
              batch_size: int = 16, seed: int = 0, model: str | None = None,
              layer: int | None = None, hook: str | None = None, device: str = "auto",
              say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
              ) -> dict[str, Any]:
    """`sae-lab probe` as a function: fit the probes on the labelled jsonl `data` with the SAE
    in `sae_dir`; writes OUT/probe.json and OUT/probe.png and returns the result."""
    from sae_lab.lm.attach import hook_point, load_lm, load_sae_dir, model_name, resolve_device

    labelled = read_labelled(data, positive)
    device = resolve_device(device)
    sae = load_sae_dir(sae_dir, device)
    layer, hook = hook_point(sae, layer, hook)
    name = model_name(sae, model)
    lm, tokenizer = load_lm(name, device)
    say(f"{len(labelled.texts)} texts; positive label {labelled.labels[1]!r}")
    feats = text_features(lm, tokenizer, sae, labelled.texts, layer, hook, pool, batch_size,
                          max_length)
    result = run_probes(feats, labelled.y, list(ks), test_fraction, bootstrap, seed)
    result = {"data": str(data), "labels": list(labelled.labels), "model": name,
              "layer": layer, "hook": hook, "pool": pool, **result}
    out = Path(out)
    atomic_write_json(out / PROBE_JSON, result)
    plot(result, out / PROBE_PNG, f"{Path(sae_dir).name}: {labelled.labels[1]!r} vs "
         f"{labelled.labels[0]!r}, {pool}-pooled")
    return result
