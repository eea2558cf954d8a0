"""absorption: the first-letter task of Chanin et al. 2024 ("A is for Absorption"), scored as
SAEBench (Karvonen et al. 2025) scores it.

    tokens     shard rows whose token starts a word and is alphabetic, at most `per_token` rows
               of each token id (so that "the" does not stand for all of t); the label is the
               token's first letter
    probe      multinomial logistic regression on the standardised activations (even rows train,
               odd rows test); letter X's direction p is its weight row mapped back to raw
               activations (divided by each dimension's spread), unit-normed. Letters with fewer
               than `min_tokens` test rows or a test F1 below `min_probe_f1` are left out.
    main       letter X's main (split) latents: latents ranked by mean on X minus mean on the
               rest (train rows); a logistic probe on the first k, k = 1, 2, ... max_k; k grows
               while the test F1 rises by more than `f1_jump`
    per token  over the test rows of X that the probe labels X, in the SAE's input units x_n,
               with proj_i = z_i <W_dec[i], p>, a latent's part of the reconstruction along p:
      full absorption     every main latent is 0, x_n.p > 0, and the latent of largest proj has
                          cos(W_dec[i], p) >= full_cos and proj >= share * x_n.p
      absorption fraction main = the main latents' proj; a = the <= max_absorbers largest
                          positive proj of other latents with cos >= fraction_cos; 0 when
                          main >= x_n.p or a < share * x_n.p; 1 when main <= 0; else
                          min(a, x_n.p - main) / (min(a, x_n.p - main) + main)
    scores     per letter, the full-absorption rate and the mean absorption fraction over those
               rows; the SAE's absorption_full and absorption_fraction are their means over
               letters, absorption_split_latents the mean number of main latents

Two departures from SAEBench: its activations are read at a word inside an in-context "{word}
has the first letter:" prompt over the model's vocabulary, these at word tokens of held-out
text (no extra model runs); and proj uses <W_dec[i], p>, which is SAEBench's z_i cos(W_dec[i],
p) for the unit-norm decoder rows it assumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sae_lab.reading.probe import logistic_scores

if TYPE_CHECKING:
    from torch import Tensor

    from sae_lab.sae.base import SAE


@dataclass
class AbsorptionParams:
    per_token: int = 8
    min_tokens: int = 10
    min_probe_f1: float = 0.6
    max_k: int = 10
    f1_jump: float = 0.03
    full_cos: float = 0.025
    fraction_cos: float = 0.1
    share: float = 0.4
    max_absorbers: int = 3


def word_letters(token_ids: np.ndarray, tokenizer: Any) -> np.ndarray:
    """The first letter (a-z) of each token that starts a word and is alphabetic, else ""."""
    uniq = np.unique(token_ids)
    raw = tokenizer.convert_ids_to_tokens([int(i) for i in uniq])
    vocab = tokenizer.get_vocab()
    marker = next((m for m in ("Ġ", "▁") if any(t.startswith(m) for t in vocab)), None)
    special = set(getattr(tokenizer, "all_special_tokens", []))
    letter = {}
    for i, t in zip(uniq.tolist(), raw, strict=True):
        word = ""
        if t is None or t in special:
            pass
        elif marker is not None:
            word = t[len(marker):] if t.startswith(marker) else ""
        elif not t.startswith("##"):
            word = t
        letter[i] = word[0].lower() if word.isascii() and word.isalpha() else ""
    return np.array([letter[int(i)] for i in token_ids], dtype=object)


def cap_per_token(token_ids: np.ndarray, keep: np.ndarray, per_token: int) -> np.ndarray:
    """Indices of the rows in `keep` (bool), at most `per_token` per token id, in order."""
    seen: dict[int, int] = {}
    out = []
    for i in np.flatnonzero(keep):
        t = int(token_ids[i])
        if seen.get(t, 0) < per_token:
            seen[t] = seen.get(t, 0) + 1
            out.append(i)
    return np.array(out, dtype=int)


@dataclass
class LetterProbe:
    letters: list[str]
    """the letters kept, each with its direction"""
    directions: np.ndarray
    """[L, d_in] unit probe directions"""
    labels: np.ndarray
    """[N] each row's first letter"""
    train: np.ndarray
    test: np.ndarray
    true_positives: dict[str, np.ndarray]
    """test rows of each letter that the probe labels with it"""
    f1: dict[str, float] = field(default_factory=dict)


def fit_letter_probe(x: np.ndarray, labels: np.ndarray, params: AbsorptionParams,
                     seed: int = 0) -> LetterProbe:
    """The ground-truth probe on raw activations x [N, d_in] of rows labelled by letter."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    idx = np.arange(len(labels))
    train, test = idx[0::2], idx[1::2]
    mu = x[train].mean(0)
    sd = x[train].std(0)
    sd = np.maximum(sd, 1e-6 * (sd.mean() or 1.0))
    present = sorted(set(labels[train]) & set(labels[test]))
    if len(present) < 2:
        raise ValueError(f"{len(labels)} word tokens hold fewer than 2 first letters; give "
                         "more rows (--max-tokens)")
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit((x[train] - mu) / sd, labels[train])
    pred = clf.predict((x[test] - mu) / sd)
    classes = list(clf.classes_)
    kept, dirs, tps, f1s = [], [], {}, {}
    for c in classes:
        n_test = int((labels[test] == c).sum())
        f1 = float(f1_score(labels[test] == c, pred == c, zero_division=0.0))
        if n_test < params.min_tokens or f1 < params.min_probe_f1:
            continue
        w = clf.coef_[classes.index(c)] if len(classes) > 2 else \
            clf.coef_[0] * (1 if c == classes[1] else -1)
        w = w / sd  # the same decision function on raw activations: w.x + const
        kept.append(c)
        dirs.append(w / np.linalg.norm(w))
        tps[c] = test[(labels[test] == c) & (pred == c)]
        f1s[c] = f1
    if not kept:
        raise ValueError(f"no first letter has >= {params.min_tokens} test tokens and a probe "
                         f"F1 >= {params.min_probe_f1} among {len(labels)} word tokens; give "
                         "more rows (--max-tokens)")
    return LetterProbe(kept, np.stack(dirs), labels, train, test, tps, f1s)


def main_latents(z: np.ndarray, positive: np.ndarray, train: np.ndarray, test: np.ndarray,
                 params: AbsorptionParams, seed: int = 0) -> list[int]:
    """Letter X's split latents: the first k by class-mean gap, k grown while the k-sparse
    probe's test F1 rises by more than f1_jump."""
    from sklearn.metrics import f1_score

    gap = z[train][positive[train]].mean(0) - z[train][~positive[train]].mean(0)
    ranked = np.argsort(-gap, kind="stable")
    best_k, best_f1 = 0, 0.0
    for k in range(1, min(params.max_k, z.shape[1]) + 1):
        cols = ranked[:k]
        p = logistic_scores(z[train][:, cols], positive[train], z[test][:, cols], seed)
        f1 = float(f1_score(positive[test], p > 0.5, zero_division=0.0))
        if k > 1 and f1 - best_f1 <= params.f1_jump:
            break
        best_k, best_f1 = k, f1
    return ranked[:best_k].tolist()


def token_absorption(z: Tensor, x_n: Tensor, W_dec: Tensor, p: Tensor, main: list[int],
                     params: AbsorptionParams) -> tuple[Tensor, Tensor]:
    """(full [n] bool, fraction [n]) for rows z [n, d_sae], x_n [n, d_in] of one letter."""
    import torch

    W = W_dec.float()
    along = W @ p  # [d_sae] <W_dec[i], p>
    cos = along / W.norm(dim=1).clamp_min(1e-12)
    proj = z.float() * along  # [n, d_sae]
    total = x_n.float() @ p  # [n]
    main_t = torch.tensor(main, dtype=torch.long)
    main_proj = proj[:, main_t].sum(1)
    # full absorption: one latent carries the direction while the main latents are silent
    silent = (z[:, main_t] <= 0).all(1)
    top_proj, top = proj.max(1)
    full = silent & (total > 0) & (cos[top] >= params.full_cos) & \
        (top_proj >= params.share * total)
    # absorption fraction: the part of x_n.p that up to max_absorbers other latents carry
    others = proj.clone()
    others[:, main_t] = 0
    others[:, cos < params.fraction_cos] = 0
    others = others.clamp_min(0)
    k = min(params.max_absorbers, others.shape[1])
    absorbed = others.topk(k, dim=1).values.sum(1)
    a = torch.minimum(absorbed, total - main_proj)
    frac = (a / (a + main_proj)).clamp(0, 1)
    frac = torch.where(main_proj <= 0, torch.ones_like(frac), frac)
    frac = torch.where((main_proj >= total) | (absorbed < params.share * total),
                       torch.zeros_like(frac), frac)
    return full, frac


def absorption(sae: SAE, x: Tensor, probe: LetterProbe, params: AbsorptionParams | None = None,
               seed: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, per-letter details) of `sae` on the rows x [N, d_in] that `probe` was fit on."""
    import torch

    params = params or AbsorptionParams()
    dev, dtype = sae.W_enc.device, sae.W_enc.dtype
    with torch.no_grad():
        xs = x.to(dev, dtype)
        z = sae.encode(xs).float().cpu()
        x_n = sae.normalize_input(xs).float().cpu()
    z_np = z.numpy()
    W_dec = sae.W_dec.detach().float().cpu()
    per_letter: dict[str, Any] = {}
    for c, p_np in zip(probe.letters, probe.directions, strict=True):
        main = main_latents(z_np, probe.labels == c, probe.train, probe.test, params, seed)
        rows = torch.as_tensor(probe.true_positives[c], dtype=torch.long)
        p = torch.as_tensor(p_np, dtype=torch.float32)
        full, frac = token_absorption(z[rows], x_n[rows], W_dec, p, main, params)
        per_letter[c] = {"main_latents": main, "true_positives": len(rows),
                         "probe_f1": round(probe.f1[c], 4),
                         "full_absorption_rate": float(full.float().mean()) if len(rows) else 0.0,
                         "absorption_fraction": float(frac.mean()) if len(rows) else 0.0}
    vals = list(per_letter.values())
    metrics = {
        "absorption_full": float(np.mean([v["full_absorption_rate"] for v in vals])),
        "absorption_fraction": float(np.mean([v["absorption_fraction"] for v in vals])),
        "absorption_split_latents": float(np.mean([len(v["main_latents"]) for v in vals])),
    }
    return metrics, per_letter
