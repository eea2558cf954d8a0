"""sparse_probing: can a handful of latents tell the classes of a labelled text set apart?

    features   each text -> the activations at the SAE's hook on its tokens (special tokens
               left out), mean-pooled; and the SAE's latents of each token, mean-pooled
    tasks      one binary task per class: that class against an equal-size sample of the others
               (a two-class set is one task); a stratified train/test split of each
    probes     k-sparse: the k features whose class means differ most on the training split (the
               selection of SAEBench, Karvonen et al. 2025), then logistic regression. On the
               latents (sae_top{k}) and on the raw activation dimensions (llm_top{k}), for each k;
               and on every raw dimension (llm_all), the ceiling a dense probe reaches
    score      held-out accuracy, the mean over the set's tasks
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sae_lab.reading.probe import logistic_scores, top_differing

if TYPE_CHECKING:
    from torch import Tensor, nn

    from sae_lab.sae.base import SAE

KS = (1, 2, 5, 20)


def token_activations(model: nn.Module, tokenizer: Any, texts: list[str], layer: int, hook: str,
                      max_length: int = 128, batch_size: int = 16) -> list[Tensor]:
    """Each text's activations at (layer, hook), [T_i, d], special tokens left out (float32,
    on the CPU)."""
    import torch

    from sae_lab.lm.hooks import capture, run_to_hooks

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    out: list[Tensor] = []
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = [tokenizer(t, truncation=True, max_length=max_length,
                             return_special_tokens_mask=True) for t in texts[s : s + batch_size]]
            T = max(len(e["input_ids"]) for e in enc)
            ids = torch.full((len(enc), T), pad if pad is not None else 0, dtype=torch.long)
            mask = torch.zeros(len(enc), T, dtype=torch.long)
            for i, e in enumerate(enc):
                ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
                mask[i, : len(e["input_ids"])] = 1
            with capture(model, [layer], hook) as acts:
                run_to_hooks(model, input_ids=ids.to(device), attention_mask=mask.to(device))
            x = acts[layer].float().cpu()  # [B, T, d]
            for i, e in enumerate(enc):
                n = len(e["input_ids"])
                special = torch.tensor(e.get("special_tokens_mask", [0] * n), dtype=torch.bool)
                keep = ~special if not special.all() else torch.ones(n, dtype=torch.bool)
                out.append(x[i, :n][keep])
    return out


def pool_raw(acts: list[Tensor]) -> np.ndarray:
    """[N, d] mean of each text's token activations."""
    import torch

    return torch.stack([a.mean(0) for a in acts]).numpy()


def pool_latents(sae: SAE, acts: list[Tensor], chunk: int = 4096) -> np.ndarray:
    """[N, d_sae] mean of each text's token latents."""
    import torch

    dev, dtype = sae.W_enc.device, sae.W_enc.dtype
    flat = torch.cat(acts)
    with torch.no_grad():
        z = torch.cat([sae.encode(c.to(dev, dtype)).float().cpu() for c in flat.split(chunk)])
    return torch.stack([p.mean(0) for p in z.split([len(a) for a in acts])]).numpy()


class Task(NamedTuple):
    name: str
    train: np.ndarray
    """indices into the set's texts"""
    test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def binary_tasks(labels: list[str], test_fraction: float = 0.3, seed: int = 0) -> list[Task]:
    """One task per class against a same-size sample of the rest; one task for two classes."""
    from sklearn.model_selection import train_test_split

    labels_a = np.asarray(labels)
    classes = sorted(set(labels))
    rng = np.random.default_rng(seed)
    tasks = []
    for c in classes[1:] if len(classes) == 2 else classes:
        pos = np.flatnonzero(labels_a == c)
        rest = np.flatnonzero(labels_a != c)
        neg = np.sort(rng.choice(rest, size=min(len(pos), len(rest)), replace=False))
        idx = np.concatenate([pos, neg])
        y = np.concatenate([np.ones(len(pos), int), np.zeros(len(neg), int)])
        try:
            tr, te, y_tr, y_te = train_test_split(idx, y, test_size=test_fraction, stratify=y,
                                                  random_state=seed)
        except ValueError as e:
            raise ValueError(f"class {c!r}: cannot split {len(idx)} texts for probing ({e})"
                             ) from None
        tasks.append(Task(str(c), tr, te, y_tr, y_te))
    return tasks


def sparse_accuracy(x: np.ndarray, task: Task, k: int | None, seed: int = 0) -> float:
    """Held-out accuracy of logistic regression on the k features of x whose class means differ
    most on the training split (all features with k None)."""
    x_tr, x_te = x[task.train], x[task.test]
    if k is not None:
        keep = top_differing(x_tr, task.y_train, k)
        x_tr, x_te = x_tr[:, keep], x_te[:, keep]
    p = logistic_scores(x_tr, task.y_train, x_te, seed)
    return float(((p > 0.5).astype(int) == task.y_test).mean())


def probe_accuracies(x: np.ndarray, tasks: list[Task], prefix: str, ks: tuple[int, ...] = KS,
                     dense: bool = False, seed: int = 0) -> dict[str, float]:
    """{prefix_top{k}: mean accuracy over tasks} for each k below the width of x, and with
    `dense` {prefix_all: ...} on every feature."""
    out = {}
    for k in ks:
        if k < x.shape[1]:
            out[f"{prefix}_top{k}"] = float(np.mean([sparse_accuracy(x, t, k, seed)
                                                     for t in tasks]))
    if dense:
        out[f"{prefix}_all"] = float(np.mean([sparse_accuracy(x, t, None, seed) for t in tasks]))
    return out


def mean_over_sets(per_set: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the sets that have it, named probe_<metric>."""
    keys = list(dict.fromkeys(k for m in per_set.values() for k in m))
    return {f"probe_{k}": float(np.mean([m[k] for m in per_set.values() if k in m]))
            for k in keys}
