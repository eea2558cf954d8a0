"""`sae-lab serve` in headless Chromium: type text into the page, submit, see the highlights.

The server runs as the real command in a subprocess (bound to 127.0.0.1, a free port); Chromium
is driven over the DevTools protocol (aiohttp's websocket client): Input.insertText types into
the focused text box like a keyboard would. Both processes are stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import torch
from helpers.tiny import HOOK, LAYER, make_sae

from sae_lab.files import atomic_write_json
from sae_lab.lm.attach import load_lm
from sae_lab.reading.serve import Viewer

TEXT = "The parser reads the file and returns a list of values."


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                            awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait(self, expr: str, timeout: float = 60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if await self.js(expr):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"waited {timeout} s for {expr}")


def start(cmd: list[str], pattern: str, stream: str, timeout: float = 120, **kw):
    """A process, and the first match of `pattern` in its stdout or stderr."""
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **kw)
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        line = pipe.readline()
        if not line:
            proc.kill()
            raise RuntimeError(f"{cmd[0]} exited: {''.join(seen)[-2000:]}")
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise TimeoutError(f"{cmd[0]}: no line matching {pattern}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def type_and_read(page_url: str, text: str) -> dict:
    import aiohttp

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        chrome, port = start([exe, "--headless", "--no-sandbox", "--disable-gpu",
                              "--no-first-run", "--disable-background-networking",
                              "--remote-debugging-port=0", f"--user-data-dir={profile}",
                              page_url], r"DevTools listening on ws://127\.0\.0\.1:(\d+)/",
                             "stderr", timeout=60)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t["type"] == "page"]
                async with http.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                           max_msg_size=0) as ws:
                    dt = DevTools(ws)
                    await dt.wait("document.body && document.body.dataset.ready === '1'")
                    await dt.js("document.getElementById('text').focus()")
                    await dt.call("Input.insertText", text=text)  # typed, as by a keyboard
                    await dt.js("document.getElementById('go').click()")
                    await dt.wait("document.body.dataset.state === 'done'")
                    state = await dt.js("""(() => ({
                      typed: document.getElementById('text').value,
                      status: document.getElementById('status').textContent,
                      tokens: [...document.querySelectorAll('#tokens span')].map(
                        (s) => [s.textContent, s.className, Number(s.dataset.value || 0)]),
                      latents: [...document.querySelectorAll('.latent')].map(
                        (d) => [Number(d.dataset.latent), d.className, d.textContent]),
                    }))()""")
                    # Selecting another latent repaints the highlights.
                    second = state["latents"][1][0]
                    await dt.js(f"document.querySelector('.latent[data-latent=\"{second}\"]')"
                                ".click()")
                    state["second"] = await dt.js(
                        "[...document.querySelectorAll('#tokens span')].map("
                        "(s) => Number(s.dataset.value || 0))")
        finally:
            stop(chrome)
    return state


@pytest.mark.slow
def test_serve_in_chromium(tiny_lm, tmp_path):
    sae = make_sae()
    sae.metadata.update(model=str(tiny_lm), layer=LAYER, hook=HOOK)
    sae.save(tmp_path / "sae")
    # The expected answer, computed in-process with the same pieces.
    model, tok = load_lm(str(tiny_lm))
    want = Viewer(model, tok, sae, LAYER, HOOK).analyse(TEXT)
    top = want["latents"][0]
    atomic_write_json(tmp_path / "sae" / "explanations.json", {
        str(top["id"]): {"title": "parser words", "explanation": "fires on parsing.",
                         "score": 0.75}})
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    server, url = start([sys.executable, "-m", "sae_lab.cli", "serve", str(tmp_path / "sae"),
                         "--port", "0", "--device", "cpu"],
                        r"serving on (http://127\.0\.0\.1:\d+/)", "stdout", env=env)
    try:
        state = asyncio.run(type_and_read(url, TEXT))
    finally:
        stop(server)
    assert server.returncode is not None  # stopped
    assert state["typed"] == TEXT
    assert "".join(t[0] for t in state["tokens"]) == TEXT
    assert state["status"].startswith(f"{len(want['tokens'])} tokens")
    # Highlights: exactly the tokens where the top latent fires, with its activations.
    got = [t[2] for t in state["tokens"]]
    assert got == pytest.approx(top["acts"], abs=1e-3)
    assert [t[1] == "hot" for t in state["tokens"]] == [a > 0 for a in top["acts"]]
    assert any(t[1] == "hot" for t in state["tokens"])
    assert [d[0] for d in state["latents"]] == [l["id"] for l in want["latents"]]
    assert "selected" in state["latents"][0][1]
    assert "parser words" in state["latents"][0][2] and "detection 0.75" in state["latents"][0][2]
    assert state["second"] == pytest.approx(want["latents"][1]["acts"], abs=1e-3)


def test_viewer_known_answer(tiny_lm):
    """Per-token top latents are the SAE's encoding of the hook activations."""
    from sae_lab.lm.hooks import capture, run_to_hooks

    model, tok = load_lm(str(tiny_lm))
    sae = make_sae()
    res = Viewer(model, tok, sae, LAYER, HOOK, top_k=3).analyse("def f(x): return x")
    ids = tok("def f(x): return x")["input_ids"]
    with torch.no_grad(), capture(model, [LAYER], HOOK) as acts:
        run_to_hooks(model, input_ids=torch.tensor([ids]))
        z = sae.encode(acts[LAYER][0])
    assert len(res["tokens"]) == len(ids)
    for pos, t in enumerate(res["tokens"]):
        v, i = z[pos].topk(3)
        assert [p[0] for p in t["top"]] == [int(a) for a, b in zip(i, v, strict=True) if b > 0]
    best = res["latents"][0]
    assert best["max"] == pytest.approx(float(z.max()), abs=1e-4)
    assert best["acts"] == pytest.approx(z[:, best["id"]].tolist(), abs=1e-4)
    assert json.dumps(res)  # JSON-ready


def test_tokens_read_as_typed_for_wordpiece_and_bytes(tiny_lm):
    """Token pieces come from the tokenizer's offsets: MiniLM's WordPiece shows no `##` and keeps
    the spaces and case; byte-level BPE keeps multi-byte characters whole."""
    text = "Return the PARSED configuration file, café ünïcode!"
    model, tok = load_lm("minilm")
    res = Viewer(model, tok, make_sae(d_in=384, d_sae=512), 3, HOOK).analyse(text)
    pieces = [t["text"] for t in res["tokens"]]
    assert "".join(pieces) == text and not any("##" in p for p in pieces)
    assert " PARSED" in "".join(pieces[:4]) and "[CLS]" not in pieces  # specials left out
    model, tok = load_lm(str(tiny_lm))
    res = Viewer(model, tok, make_sae(), LAYER, HOOK).analyse(text)
    assert "".join(t["text"] for t in res["tokens"]) == text
