"""A live viewer: type text, see which latents fire on each token.

    sae-lab serve SAE_DIR [--inspect DIR] [--explanations FILE] [--port 8000]

An aiohttp app bound to 127.0.0.1 only. GET / is one page; POST /api/analyse {"text"} runs the
model to the SAE's hook and answers with each token's top latents and the text's top latents
(with their titles and explanations from `sae-lab explain`, and top contexts from an
`sae-lab inspect` output when given). The page highlights the tokens where the selected latent
fires; token text goes into the DOM as textContent only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it runs: `--help` stays fast
    from torch import nn

    from sae_lab.sae.base import SAE

MAX_CHARS = 20_000


class Viewer:
    """The model, the SAE and what is known about each latent; `analyse(text)` does the work."""

    def __init__(self, model: nn.Module, tokenizer: Any, sae: SAE, layer: int, hook: str,
                 notes: dict[int, dict[str, Any]] | None = None,
                 contexts: dict[int, list[dict[str, Any]]] | None = None,
                 top_k: int = 5, max_length: int = 256) -> None:
        self.model, self.tokenizer, self.sae = model, tokenizer, sae.eval()
        self.layer, self.hook = layer, hook
        self.notes = notes or {}
        self.contexts = contexts or {}
        self.top_k, self.max_length = top_k, max_length
        self.lock = threading.Lock()  # one forward pass at a time

    def analyse(self, text: str, n_latents: int = 20) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            return self._analyse(text, n_latents)

    def _analyse(self, text: str, n_latents: int) -> dict[str, Any]:
        import torch

        from sae_lab.lm.hooks import capture, run_to_hooks

        fast = getattr(self.tokenizer, "is_fast", False)
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length,
                             return_special_tokens_mask=True, return_offsets_mapping=fast)
        ids = enc["input_ids"]
        pieces = _pieces(text, enc.get("offset_mapping"), ids, self.tokenizer)
        special = enc.get("special_tokens_mask", [0] * len(ids))
        device = next(self.model.parameters()).device
        with self.lock, capture(self.model, [self.layer], self.hook) as acts:
            run_to_hooks(self.model, input_ids=torch.tensor([ids], device=device))
            x = acts[self.layer][0].float()  # [T, d_in]
            z = self.sae.encode(x.to(self.sae.W_enc.dtype)).float().cpu()  # [T, d_sae]
        shown = [i for i, s in enumerate(special) if not s] or list(range(len(ids)))
        z = z[shown]
        k = min(self.top_k, z.shape[1])
        v, i = z.topk(k, dim=1)
        tokens = []
        for pos, t in enumerate(shown):
            top = [[int(a), round(float(b), 4)] for a, b in zip(i[pos], v[pos], strict=True)
                   if b > 0]
            tokens.append({"text": pieces[t], "top": top})
        peak = z.max(dim=0).values  # [d_sae]
        order = peak.argsort(descending=True)[:n_latents]
        latents = []
        for j in order.tolist():
            if peak[j] <= 0:
                break
            note = self.notes.get(j, {})
            latents.append({
                "id": j, "max": round(float(peak[j]), 4),
                "acts": [round(float(a), 4) for a in z[:, j]],
                "title": note.get("title") or "", "explanation": note.get("explanation") or "",
                "score": note.get("score"), "contexts": self.contexts.get(j, [])[:5],
            })
        return {"tokens": tokens, "latents": latents}


def _pieces(text: str, offsets: list[tuple[int, int]] | None, ids: list[int],
            tokenizer: Any) -> list[str]:
    """Each token's text as typed: its span of `text` with the whitespace before it, so the
    pieces read as the text for every tokenizer (no `##`, `Ġ`, `▁`); specials get "". Without
    offsets (slow tokenizers), each token decoded alone."""
    if offsets is None:
        return [tokenizer.decode([i]) for i in ids]
    out, prev = [], 0
    for a, b in offsets:
        if b <= a or b <= prev:  # a special token, or the 2nd byte-token of one character
            out.append("")
            continue
        out.append(text[min(prev, a):b])
        prev = b
    return out


def read_inspect_contexts(path: str | os.PathLike) -> dict[int, list[dict[str, Any]]]:
    """{latent: contexts} from an `sae-lab inspect` output (the JSON inside its index.html)."""
    from sae_lab.reading.browser import INDEX

    index = Path(path) / INDEX if Path(path).is_dir() else Path(path)
    if not index.is_file():
        raise FileNotFoundError(f"{path}: no {INDEX} (not an `sae-lab inspect` output)")
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>',
                  index.read_text(encoding="utf-8"), re.S)
    if not m:
        raise ValueError(f"{index}: no latent data (not an `sae-lab inspect` output)")
    return {int(r["id"]): r.get("contexts", []) for r in json.loads(m.group(1))["latents"]}


def read_notes(sae_dir: str | os.PathLike, explanations: str | os.PathLike | None = None
               ) -> dict[int, dict[str, Any]]:
    """{latent: note} from `explanations` (an error when missing), else from
    SAE_DIR/explanations.json when it exists."""
    from sae_lab.reading.explain import EXPLANATIONS, read_explanations

    path = explanations or Path(sae_dir) / EXPLANATIONS
    if explanations and not Path(path).is_file():
        raise FileNotFoundError(f"--explanations {path}: no such file")
    return {int(k): v for k, v in read_explanations(path).items() if isinstance(v, dict)}


def serve(viewer: Viewer, port: int, title: str = "sae_lab viewer") -> None:
    """Serve the viewer on 127.0.0.1:`port` until interrupted."""
    asyncio.run(_serve(make_app(viewer, title), port))


def make_app(viewer: Viewer, title: str = "sae_lab viewer") -> Any:
    from aiohttp import web

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page(title), content_type="text/html")

    async def analyse(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            text = body["text"]
            assert isinstance(text, str)
        except Exception:
            return web.json_response({"error": 'expected JSON {"text": "..."}'}, status=400)
        if not text.strip():
            return web.json_response({"error": "empty text"}, status=400)
        if len(text) > MAX_CHARS:
            return web.json_response({"error": f"text longer than {MAX_CHARS} characters"},
                                     status=413)
        result = await asyncio.get_running_loop().run_in_executor(None, viewer.analyse, text)
        return web.json_response(result)

    app = web.Application(client_max_size=4 * MAX_CHARS)
    app.router.add_get("/", index)
    app.router.add_post("/api/analyse", analyse)
    return app


async def _serve(app: Any, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)  # never another interface
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(f"cannot listen on 127.0.0.1:{port} ({e.strerror or e})") from None
    host, bound = runner.addresses[0][:2]
    print(f"serving on http://{host}:{bound}/ (Ctrl-C stops it)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# --- the page ----------------------------------------------------------------------------------

_CSS = """
body { font: 14px system-ui, sans-serif; margin: 0; color: #1d232b; }
header { padding: 10px 16px; background: #f1f4f8; border-bottom: 1px solid #d5dbe3; }
header h1 { font-size: 17px; margin: 0 0 6px 0; }
textarea { width: 100%; box-sizing: border-box; height: 70px; font: 14px ui-monospace, monospace; }
#go { margin-top: 6px; padding: 4px 14px; }
#status { margin-left: 10px; color: #55606e; }
main { display: flex; }
#tokens { flex: 2; padding: 12px 16px; font: 15px ui-monospace, monospace; white-space: pre-wrap;
  line-height: 1.9; }
#tokens span { border-radius: 2px; cursor: default; }
#latents { flex: 1; padding: 12px 16px; border-left: 1px solid #d5dbe3; overflow-y: auto;
  max-height: calc(100vh - 170px); }
.latent { padding: 4px 6px; margin: 2px 0; cursor: pointer; border-radius: 3px; }
.latent:hover { background: #e8eef6; }
.latent.selected { background: #cfe0f5; }
.latent .title { font-weight: bold; }
.latent .expl, .ctx { color: #44505c; font-size: 12px; }
.ctx { font-family: ui-monospace, monospace; white-space: pre-wrap; margin: 2px 0 2px 12px; }
.ctx b { background: #f7b267; }
"""

_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let result = null, selected = null;
const show = (t) => t.replace(/\n/g, "\u21b5\n");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function paint() {
  const box = $("tokens");
  box.replaceChildren();
  const l = result.latents.find((x) => x.id === selected);
  result.tokens.forEach((t, i) => {
    const s = el("span", "", show(t.text));
    const a = l ? l.acts[i] : 0;
    if (a > 0) {
      s.className = "hot";
      s.dataset.value = String(a);
      s.style.background = "rgba(247, 140, 40, " + (0.15 + 0.85 * a / l.max).toFixed(3) + ")";
    }
    s.title = t.top.map((p) => "#" + p[0] + " " + p[1]).join("\n") || "no latent fires";
    box.appendChild(s);
  });
  for (const d of document.querySelectorAll(".latent")) {
    d.classList.toggle("selected", Number(d.dataset.latent) === selected);
  }
}

function listLatents() {
  const box = $("latents");
  box.replaceChildren(el("h3", "", "Top latents in this text"));
  if (result.latents.length === 0) box.appendChild(el("p", "", "No latent fires."));
  for (const l of result.latents) {
    const d = el("div", "latent");
    d.dataset.latent = String(l.id);
    const head = el("div");
    head.appendChild(el("span", "", "#" + l.id + "  max " + l.max.toFixed(2) + "  "));
    head.appendChild(el("span", "title", l.title));
    d.appendChild(head);
    if (l.explanation) {
      const score = l.score === null || l.score === undefined ? "" :
        " (detection " + l.score.toFixed(2) + ")";
      d.appendChild(el("div", "expl", l.explanation + score));
    }
    for (const c of l.contexts.slice(0, 3)) {
      const row = el("div", "ctx");
      c.tokens.forEach((t, i) => row.appendChild(el(i === c.at ? "b" : "span", "", show(t))));
      d.appendChild(row);
    }
    d.addEventListener("click", () => { selected = l.id; paint(); });
    box.appendChild(d);
  }
}

async function analyse() {
  const text = $("text").value;
  $("status").textContent = "running...";
  document.body.dataset.state = "busy";
  try {
    const r = await fetch("api/analyse", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify({text})});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    result = body;
    selected = result.latents.length ? result.latents[0].id : null;
    listLatents();
    paint();
    $("status").textContent = result.tokens.length + " tokens, " + result.latents.length +
      " latents fire";
  } catch (e) {
    $("status").textContent = "error: " + e.message;
  }
  document.body.dataset.state = "done";
}

$("go").addEventListener("click", analyse);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) analyse();
});
document.body.dataset.ready = "1";
"""


def page(title: str) -> str:
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<title>{esc}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc}</h1>\n"
        "<textarea id=\"text\" placeholder=\"type text, then Analyse (Ctrl+Enter)\"></textarea>"
        "<br><button id=\"go\">Analyse</button><span id=\"status\"></span></header>\n"
        "<main><div id=\"tokens\"></div><div id=\"latents\"></div></main>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )
