"""Which latents fire on a text: the top latents of each token and of the whole text.

    found = text_features(model, tokenizer, sae, ["The cat sat."], layer, hook, top=5)
    found[0].overall      [LatentHit(latent, max, at, fires, title), ...] by largest activation
    found[0].per_token    per token: [(latent, value), ...] largest first
    format_features(found), features_json(found)

The model runs on each text as `sae-lab harvest` did (special tokens such as [CLS] go through the
model but are not reported unless `keep_special`), the activation at the SAE's hook goes through
the SAE, and token texts are the readable pieces of `TokenText.pieces`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sae_lab.reading.contexts import TokenText
from sae_lab.sae.base import SAE

EXPLANATIONS = "explanations.json"  # {"<latent>": {"title": ..., "explanation": ..., ...}}


@dataclass
class LatentHit:
    """One latent over a whole text."""

    latent: int
    max: float
    """its largest activation on the text"""
    at: int
    """index (in `tokens`) of the token where it is largest"""
    fires: int
    """number of tokens on which it is > 0"""
    title: str | None = None


@dataclass
class TextFeatures:
    text: str
    tokens: list[str]
    """readable text of each reported token; "".join(tokens) reads as the text"""
    per_token: list[list[tuple[int, float]]]
    """per token, its top latents as (latent, activation), largest first; only those > 0"""
    overall: list[LatentHit]
    truncated: int = 0
    """tokens cut off the end because the text is longer than the model's context"""


@torch.no_grad()
def text_features(model: nn.Module, tokenizer: Any, sae: SAE, texts: list[str], layer: int,
                  hook: str, top: int = 5, top_text: int = 10,
                  latents: list[int] | None = None, titles: dict[int, str] | None = None,
                  keep_special: bool = False) -> list[TextFeatures]:
    """Top `top` latents per token and `top_text` over each text (restricted to `latents`)."""
    from sae_lab.lm.hooks import capture, run_to_hooks

    sae = sae.eval()
    device = next(model.parameters()).device
    limit = _max_length(model, tokenizer)
    pieces = TokenText(tokenizer)
    keep_cols = None if latents is None else torch.tensor(latents, dtype=torch.long)
    results = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True,
                        truncation=limit is not None, max_length=limit)
        full = len(tokenizer(text)["input_ids"])
        special = enc.pop("special_tokens_mask")[0].bool()
        with capture(model, [layer], hook) as acts:
            run_to_hooks(model, **{k: v.to(device) for k, v in enc.items()})
        act = acts[layer][0]  # [T, d]
        if act.shape[-1] != sae.d_in:
            raise ValueError(f"SAE d_in={sae.d_in} does not match the model's layer {layer} "
                             f"{hook} width {act.shape[-1]}")
        keep = torch.ones_like(special) if keep_special else ~special
        ids = enc["input_ids"][0][keep].tolist()
        z = sae.encode(act[keep.to(act.device)].to(sae.W_enc.dtype)).float().cpu()  # [T, d_sae]
        cols = torch.arange(sae.d_sae) if keep_cols is None else keep_cols
        z = z[:, cols]
        found = _summarise(text, pieces.pieces(ids), z, cols, top, top_text, titles)
        found.truncated = full - enc["input_ids"].shape[1]
        results.append(found)
    return results


def _summarise(text: str, tokens: list[str], z: torch.Tensor, cols: torch.Tensor, top: int,
               top_text: int, titles: dict[int, str] | None) -> TextFeatures:
    per_token = []
    for row in z:
        v, i = row.topk(min(top, row.numel()))
        per_token.append([(int(cols[j]), round(float(x), 4)) for x, j in zip(v, i, strict=True)
                          if x > 0])
    overall = []
    if len(z):
        best, at = z.max(dim=0)  # [n_cols]
        fires = (z > 0).sum(dim=0)
        v, i = best.topk(min(top_text, best.numel()))
        for x, j in zip(v.tolist(), i.tolist(), strict=True):
            if x <= 0:
                break
            latent = int(cols[j])
            overall.append(LatentHit(latent, round(x, 4), int(at[j]), int(fires[j]),
                                     (titles or {}).get(latent)))
    return TextFeatures(text, tokens, per_token, overall)


def _max_length(model: nn.Module, tokenizer: Any) -> int | None:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    m = getattr(tokenizer, "model_max_length", None)
    sizes = [x for x in (n, m) if isinstance(x, int) and 0 < x < 1_000_000]
    return min(sizes) if sizes else None


def features_json(found: list[TextFeatures]) -> list[dict[str, Any]]:
    """JSON-ready: per text, its tokens with their latents, and the whole-text latents."""
    return [{"text": f.text,
             "tokens": [{"token": t, "latents": [list(p) for p in lat]}
                        for t, lat in zip(f.tokens, f.per_token, strict=True)],
             "top": [asdict(h) for h in f.overall], "truncated": f.truncated} for f in found]


def format_features(found: list[TextFeatures], per_token: int | None = None) -> str:
    """A plain-text table per text: the whole-text latents, then each token's."""
    out = []
    for n, f in enumerate(found, 1):
        cut = f", the last {f.truncated} cut off (model context)" if f.truncated else ""
        out.append(f"text {n}: {f.text!r} ({len(f.tokens)} tokens{cut})")
        out.append("  top latents over the text:")
        out.append(f"  {'latent':>7} {'max':>8} {'fires':>6}  at token")
        for h in f.overall:
            tok = f.tokens[h.at].strip() or f.tokens[h.at]
            title = f"  {h.title}" if h.title else ""
            out.append(f"  {h.latent:>7} {h.max:>8.3f} {h.fires:>6}  {tok!r}{title}")
        if not f.overall:
            out.append("  (no latent fires on this text)")
        out.append("  per token: latent=activation, largest first")
        width = max((len(repr(t.strip())) for t in f.tokens), default=0)
        for i, (t, lat) in enumerate(zip(f.tokens, f.per_token, strict=True)):
            shown = lat if per_token is None else lat[:per_token]
            cells = "  ".join(f"{j}={v:.2f}" for j, v in shown)
            out.append(f"  {i:>4} {t.strip()!r:<{width}}  {cells}")
        out.append("")
    return "\n".join(out)


def load_titles(sae_dir: str | os.PathLike) -> dict[int, str] | None:
    """Latent titles from SAE_DIR/explanations.json (written by `sae-lab explain`), if any."""
    path = Path(sae_dir) / EXPLANATIONS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {int(k): str(v["title"]) for k, v in data.items()
                if isinstance(v, dict) and v.get("title")}
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a map of latent -> {{title, explanation}} ({e})") from None


def read_prompts(prompts: list[str] | None, file: str | None) -> list[str]:
    """--prompt texts, then the non-empty lines of --file."""
    texts = list(prompts or [])
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"--file {file}: no such file")
        texts += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not texts:
        raise ValueError("no text: pass --prompt TEXT or --file FILE (one text a line)")
    return texts
