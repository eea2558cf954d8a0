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
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it runs: `--help` stays fast
    from torch import nn

    from sae_lab.sae.base import SAE

MAX_CHARS = 20_000
MAX_BODY = 4 * MAX_CHARS  # bytes of a POST body (JSON escapes make the text longer)


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


def read_inspect_contexts(path: str | os.PathLike, sae_dir: str | os.PathLike | None = None
                          ) -> dict[int, list[dict[str, Any]]]:
    """{latent: contexts} from an `sae-lab inspect` output (the JSON inside its index.html).

    With `sae_dir`, the output must have been made from that SAE (the weights' sha256 it
    records): another SAE's contexts would be shown as this one's.
    """
    from sae_lab.reading.browser import read_browser_data, sae_hash

    index, data = read_browser_data(path)
    if sae_dir is not None:
        check_same_sae(index, data.get("sae_sha256"), sae_dir, sae_hash(sae_dir))
    return {int(r["id"]): r.get("contexts", []) for r in data["latents"]}


def check_same_sae(index: Path, recorded: str | None, sae_dir: str | os.PathLike,
                   actual: str) -> None:
    """A one-line ValueError unless the browser at `index` records the SAE hash `actual`."""
    if recorded is None:
        raise ValueError(f"{index} records no SAE hash (an older `sae-lab inspect` output), so "
                         f"its contexts may be another SAE's: rerun `sae-lab inspect {sae_dir}`")
    if recorded != actual:
        raise ValueError(f"{index} holds the contexts of another SAE (weights sha256 "
                         f"{recorded[:12]}, not {Path(sae_dir).name}'s {actual[:12]}): rerun "
                         f"`sae-lab inspect {sae_dir}`, or serve the SAE it was made from")


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The names a page served on 127.0.0.1 may be reached by (the Host header, with the port)."""


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a request's Host header names this loopback server: a page from another site
    that re-points its own name at 127.0.0.1 (DNS rebinding) still sends its own name."""
    if not host:
        return False
    host = host.lower()
    return host in {f"{h}:{port}" for h in LOCAL_HOSTS} or (port == 80 and host in LOCAL_HOSTS)


def _error(status: int, message: str) -> Any:
    from aiohttp import web

    return web.json_response({"error": message}, status=status)


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
    """The aiohttp app: GET / (the page) and POST /api/analyse (JSON {"text"}). Requests whose
    Host is not this loopback server are refused (403), POSTs that are not JSON (415, as a
    cross-site form would send) and bodies over the size limit (413)."""
    from aiohttp import web

    @web.middleware
    async def only_local(request: web.Request, handler: Any) -> web.StreamResponse:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        if not sock or not host_allowed(request.host, sock[1]):
            return _error(403, "Host header is not this local server")
        return await handler(request)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page(title), content_type="text/html")

    async def analyse(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, "expected Content-Type: application/json")
        if (request.content_length or 0) > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        except (ValueError, UnicodeDecodeError):
            body = None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return _error(400, 'expected JSON {"text": "..."}')
        if not text.strip():
            return _error(400, "empty text")
        if len(text) > MAX_CHARS:
            return _error(413, f"text longer than {MAX_CHARS} characters")
        result = await asyncio.get_running_loop().run_in_executor(None, viewer.analyse, text)
        return web.json_response(result)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[only_local])
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

def page(title: str) -> str:
    """The viewer page: templates/viewer.html with its CSS and JS inlined."""
    from sae_lab.reading.browser import asset, render_page

    return render_page("viewer.html", title=title, css=asset("viewer.css"),
                       js=asset("viewer.js"))


