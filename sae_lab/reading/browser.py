"""A static feature browser: one self-contained index.html, opened from disk, no server.

The latent records (density, top contexts, promoted tokens) are embedded as JSON; a little
vanilla JS lists the latents, filters them from a search box (a latent index, or text found in
its contexts and promoted tokens) and shows one panel per latent. `#latent=5` and `#q=text` in the
URL select a latent or a search on load. Token text is inserted with textContent only, so
arbitrary corpus text cannot inject markup.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sae_lab.files import atomic_dir, check_output_dir

INDEX = "index.html"
BROWSER_FILES = (INDEX,)  # what an earlier `sae-lab inspect` left in --out

_CSS = """
body { font: 14px system-ui, sans-serif; margin: 0; color: #1d232b; }
header { padding: 10px 16px; background: #f1f4f8; border-bottom: 1px solid #d5dbe3; }
header h1 { font-size: 17px; margin: 0 0 4px 0; }
#summary { color: #55606e; margin-bottom: 8px; }
#search { width: 360px; padding: 5px 8px; font-size: 14px; }
#count { margin-left: 10px; color: #55606e; }
main { display: flex; height: calc(100vh - 96px); }
nav { width: 240px; overflow-y: auto; border-right: 1px solid #d5dbe3; }
nav button { display: block; width: 100%; text-align: left; border: 0; padding: 4px 12px;
  background: none; font: 13px ui-monospace, monospace; cursor: pointer; }
nav button:hover { background: #e8eef6; }
nav button.selected { background: #cfe0f5; }
nav button.dead { color: #9aa3ad; }
section { flex: 1; overflow-y: auto; padding: 12px 20px; }
.ctx { font: 13px ui-monospace, monospace; white-space: pre-wrap; margin: 3px 0;
  padding: 3px 6px; background: #fafbfc; border-left: 3px solid #d5dbe3; }
.ctx .val { color: #55606e; margin-right: 8px; }
.hot { background: #f7b267; border-radius: 2px; font-weight: bold; }
.chip { display: inline-block; font: 13px ui-monospace, monospace; white-space: pre;
  background: #e3f1e6; border-radius: 3px; padding: 1px 5px; margin: 2px; }
"""

_JS = r"""
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const byId = new Map(data.latents.map((l) => [l.id, l]));
const list = document.getElementById("list");
const panel = document.getElementById("panel");
const search = document.getElementById("search");
const count = document.getElementById("count");
const show = (t) => t.replace(/\n/g, "\u21b5");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmtDensity(d) {
  return d > 0 ? (100 * d).toPrecision(3) + "% (log10 " + Math.log10(d).toFixed(2) + ")"
               : "never fired";
}

function haystack(l) {
  if (l._hay === undefined) {
    const parts = l.contexts.map((c) => c.tokens.join(""));
    if (l.promoted) parts.push(l.promoted.map((p) => p[0]).join(" "));
    if (l.title) parts.push(l.title);
    l._hay = parts.join("\n").toLowerCase();
  }
  return l._hay;
}

function matches(l, q) {
  if (!q) return true;
  if (/^\d+$/.test(q)) return l.id === Number(q);
  return haystack(l).includes(q.toLowerCase());
}

function renderList(q) {
  list.replaceChildren();
  let n = 0;
  for (const l of data.latents) {
    if (!matches(l, q)) continue;
    const pct = l.density > 0 ? (100 * l.density).toPrecision(2) + "%" : "dead";
    const b = el("button", l.density > 0 ? "" : "dead",
                 "#" + l.id + "  " + pct + (l.title ? "  " + l.title : ""));
    b.id = "item-" + l.id;
    b.dataset.latent = l.id;
    b.addEventListener("click", () => { location.hash = "latent=" + l.id; });
    list.appendChild(b);
    n += 1;
  }
  count.textContent = n + " of " + data.latents.length + " latents";
  list.dataset.shown = String(n);
}

function renderPanel(id) {
  const l = byId.get(id);
  panel.replaceChildren();
  for (const b of list.querySelectorAll("button.selected")) b.classList.remove("selected");
  if (!l) { panel.appendChild(el("p", "", "Latent " + id + " is not in this browser.")); return; }
  const item = document.getElementById("item-" + id);
  if (item) item.classList.add("selected");
  panel.dataset.latent = String(id);
  panel.appendChild(el("h2", "", "Latent " + id + (l.title ? ": " + l.title : "")));
  if (l.explanation) panel.appendChild(el("p", "explanation", l.explanation));
  const stats = "Density: " + fmtDensity(l.density) + "   max activation: " + l.max;
  panel.appendChild(el("p", "", stats));
  panel.appendChild(el("h3", "", "Top-activating contexts"));
  if (l.contexts.length === 0) {
    panel.appendChild(el("p", "", "It never fired on the inspected tokens."));
  }
  for (const c of l.contexts) {
    const row = el("div", "ctx");
    row.appendChild(el("span", "val", c.value.toFixed(3)));
    c.tokens.forEach((t, i) => {
      if (i !== c.at) { row.appendChild(el("span", "", show(t))); return; }
      // A piece carries the space before its word (" parse"): only the word is highlighted.
      const lead = t.match(/^\s*/)[0];
      if (lead && lead !== t) row.appendChild(el("span", "", show(lead)));
      const s = el("span", "hot", show(lead !== t ? t.slice(lead.length) : t));
      s.title = "activation " + c.value;
      row.appendChild(s);
    });
    panel.appendChild(row);
  }
  if (l.promoted) {
    panel.appendChild(el("h3", "", "Output tokens it promotes most (W_dec \u00b7 W_U)"));
    const box = el("div", "promoted");
    for (const [t, v] of l.promoted) {
      const c = el("span", "chip", show(t));
      c.title = String(v);
      box.appendChild(c);
    }
    panel.appendChild(box);
  }
}

function fromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has("q")) { search.value = h.get("q"); renderList(search.value.trim()); }
  if (h.has("latent")) renderPanel(Number(h.get("latent")));
}

document.getElementById("summary").textContent = data.summary;
search.addEventListener("input", () => renderList(search.value.trim()));
window.addEventListener("hashchange", fromHash);
renderList("");
if (data.latents.length) renderPanel(data.latents[0].id);
fromHash();
document.body.dataset.ready = "1";
"""

# Runs first, so an error anywhere later (even a syntax error) is recorded in the DOM.
_ERRORS_JS = """
window.addEventListener("error", (e) => {
  const root = document.documentElement;
  root.dataset.errors = (root.dataset.errors ? root.dataset.errors + " | " : "") + e.message;
});
"""


def render_html(latents: list[dict[str, Any]], summary: str, title: str = "sae_lab features"
                ) -> str:
    """The whole page as one string."""
    payload = json.dumps({"summary": summary, "latents": latents}, ensure_ascii=False,
                         separators=(",", ":"))
    # Any "<" could start "</script>" or "<!--" (which changes how the HTML parser ends the
    # script element); "\\u003c" is the same JSON string and holds no markup.
    payload = payload.replace("<", "\\u003c")
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<title>{esc}</title>\n<script>{_ERRORS_JS}</script>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n<header><h1>" + esc + "</h1><div id=\"summary\"></div>\n"
        "<input id=\"search\" type=\"search\" "
        "placeholder=\"latent index, or text in its contexts\"><span id=\"count\"></span>"
        "</header>\n<main><nav id=\"list\"></nav><section id=\"panel\"></section></main>\n"
        f"<script id=\"data\" type=\"application/json\">{payload}</script>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )


def write_browser(latents: list[dict[str, Any]], out: str | os.PathLike, summary: str,
                  title: str = "sae_lab features") -> Path:
    """Write out/index.html atomically (a temporary directory, then rename over `out`); an
    existing `out` is replaced only when it is an earlier browser."""
    with atomic_dir(out, "inspect", known=BROWSER_FILES) as tmp:
        (tmp / INDEX).write_text(render_html(latents, summary, title), encoding="utf-8")
    return Path(out) / INDEX


def feature_browser(sae_dir: str | os.PathLike, shards: str | os.PathLike,
                    out: str | os.PathLike, *, model: str | None = None,
                    latents: str | None = None, max_latents: int = 1000, top: int = 10,
                    context_left: int = 12, context_right: int = 4,
                    top_logits: int | None = None, max_tokens: int | None = None,
                    batch_size: int = 4096, device: str = "auto",
                    progress: bool = True) -> Path:
    """`sae-lab inspect` as a function (the flags are its arguments); returns OUT/index.html."""
    from sae_lab.data.shards import iter_blocks, read_manifest
    from sae_lab.lm.attach import check_shards, load_sae_dir, load_tokenizer, resolve_device
    from sae_lab.reading.contexts import TokenText, latent_records, parse_latents, top_activations

    check_output_dir(out, "inspect", BROWSER_FILES)  # before minutes of work, not after
    device = resolve_device(device)
    sae = load_sae_dir(sae_dir, device)
    manifest = read_manifest(shards)
    for w in check_shards(sae, manifest, shards):
        print(f"warning: {w}", file=sys.stderr)
    ids = parse_latents(latents, sae.d_sae, max_latents)
    name = model or sae.metadata.get("model") or manifest.get("model")
    if not name:
        raise ValueError("neither the SAE nor the shards name a model; pass --model")
    tokenizer = load_tokenizer(model or manifest.get("tokenizer") or name)

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr)

    promoted = None
    if top_logits != 0:
        say("loading the model for the promoted-token view (--top-logits 0 skips it)")
        promoted = _promoted(sae, name, device, top_logits)
    total = manifest.get("tokens") or None
    if max_tokens and total:
        total = min(total, max_tokens)
    found = top_activations(sae, _counted(iter_blocks(shards), total, progress), top, batch_size,
                            max_tokens, device)
    say(f"writing contexts of {len(ids)} latents")
    records = latent_records(found, ids, TokenText(tokenizer), context_left, context_right,
                             promoted)
    from sae_lab.reading.explain import EXPLANATIONS, attach_titles

    attach_titles(records, Path(sae_dir) / EXPLANATIONS)  # from `sae-lab explain`, if run
    meta = sae.metadata
    summary = (f"{sae.cfg.architecture} SAE, {sae.d_sae} latents on d_in={sae.d_in}; model "
               f"{name}, layer {meta.get('layer', manifest.get('layer'))} "
               f"{meta.get('hook', manifest.get('hook'))}; {found.n_rows} tokens from "
               f"{shards}; showing {len(ids)} latents")
    return write_browser(records, out, summary, title=f"sae_lab: {Path(sae_dir).name}")


def _promoted(sae: Any, name: str, device: str, top_logits: int | None) -> Any:
    """The output tokens each latent promotes most (W_dec @ W_U), or None when the model has no
    unembedding and the user did not ask for the view explicitly."""
    from sae_lab.lm.attach import load_model, promoted_tokens, unembedding_for

    lm = load_model(name, device)
    try:
        W_U = unembedding_for(lm, sae.d_in, name)
    except ValueError as e:
        if top_logits is not None:
            raise
        print(f"note: {e}; skipping the promoted-token view", file=sys.stderr)
        return None
    return promoted_tokens(sae.W_dec, W_U, top_logits or 10)


def _counted(blocks: Iterator[dict[str, Any]], total: int | None, show: bool
             ) -> Iterator[dict[str, Any]]:
    """The blocks unchanged, with a progress bar over their rows on stderr."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="tok", unit_scale=True, dynamic_ncols=True, desc="inspect",
              file=sys.stderr, disable=not show) as bar:
        for block in blocks:
            n = block["acts"].shape[0]
            bar.update(n if total is None else min(n, total - bar.n))
            yield block
