"""`sae-lab serve`'s refusals, and the pages' templates.

The app runs on a real aiohttp server on 127.0.0.1 (a free port) with a stand-in viewer: these
tests are about what reaches the viewer, not what it computes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
from pathlib import Path

import pytest
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.reading.browser import TEMPLATES, asset, render_html, sae_hash, write_browser
from sae_lab.reading.serve import MAX_BODY, make_app, page, read_inspect_contexts

REPO = Path(__file__).resolve().parents[2]
CONTEXTS = [{"tokens": ["a", " b"], "at": 1, "value": 1.5}]


class StandIn:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def analyse(self, text: str, n_latents: int = 20) -> dict:
        self.texts.append(text)
        return {"tokens": [{"text": text, "top": []}], "latents": []}


def answers(requests: list[tuple[str, dict]]) -> tuple[list[tuple[int, str]], StandIn]:
    """(status, body) of each (method path, request options) against a served app."""
    from aiohttp.test_utils import TestClient, TestServer

    viewer = StandIn()

    async def go():
        async with TestClient(TestServer(make_app(viewer), host="127.0.0.1")) as client:
            out = []
            for what, kw in requests:
                method, path = what.split()
                if callable(kw.get("headers")):
                    kw = {**kw, "headers": kw["headers"](client.port)}
                async with client.request(method, path, **kw) as r:
                    out.append((r.status, await r.text()))
            return out

    return asyncio.run(go()), viewer


def test_only_requests_to_this_local_server_are_answered():
    def host(name):
        return lambda port: {"Host": name.format(port=port)}

    ok = {"json": {"text": "hi"}}
    got, viewer = answers([
        ("GET /", {}),  # the client's own Host: 127.0.0.1:PORT
        ("GET /", {"headers": host("localhost:{port}")}),
        ("POST /api/analyse", {**ok, "headers": host("[::1]:{port}")}),
        ("GET /", {"headers": host("LOCALHOST:{port}")}),
        # DNS rebinding: the attacker's name now resolves to 127.0.0.1, the Host stays theirs.
        ("GET /", {"headers": host("evil.example:{port}")}),
        ("POST /api/analyse", {**ok, "headers": host("evil.example:{port}")}),
        ("GET /", {"headers": host("127.0.0.1:1")}),  # another port
        ("GET /", {"headers": host("localhost")}),  # no port: not this server (not on 80)
    ])
    assert [s for s, _ in got] == [200, 200, 200, 200, 403, 403, 403, 403]
    assert "<textarea" in got[0][1] and "Host header" in got[4][1]
    assert viewer.texts == ["hi"]  # the refused POST never reached the model


def test_posts_that_are_not_json_are_refused():
    got, viewer = answers([
        ("POST /api/analyse", {"data": {"text": "hi"}}),  # a cross-site HTML form's encoding
        ("POST /api/analyse", {"data": '{"text": "hi"}',
                               "headers": {"Content-Type": "text/plain"}}),  # no-cors fetch
        ("POST /api/analyse", {"data": b"{not json", "headers": {
            "Content-Type": "application/json"}}),
        ("POST /api/analyse", {"json": ["hi"]}),
        ("POST /api/analyse", {"json": {"text": "hi"}}),
    ])
    assert [s for s, _ in got] == [415, 415, 400, 400, 200]
    assert "application/json" in got[0][1]
    assert viewer.texts == ["hi"]


def test_oversize_bodies_get_413():
    async def chunked():  # no Content-Length: the server finds out while reading
        for _ in range(MAX_BODY // 1000 + 2):
            yield b"x" * 1000

    big = b'{"text": "' + b"x" * MAX_BODY + b'"}'
    got, viewer = answers([
        ("POST /api/analyse", {"data": big, "headers": {"Content-Type": "application/json"}}),
        ("POST /api/analyse", {"data": chunked(), "headers": {
            "Content-Type": "application/json"}}),
        ("POST /api/analyse", {"json": {"text": "y" * 20_001}}),  # small body, too long a text
    ])
    assert [s for s, _ in got] == [413, 413, 413], got
    assert f"larger than {MAX_BODY} bytes" in got[0][1] and "20000 characters" in got[2][1]
    assert viewer.texts == []


def saved_sae(path: Path, d_sae: int, seed: int) -> Path:
    sae = make_sae(d_sae=d_sae, seed=seed)
    sae.metadata.update(model="unused", layer=1, hook="resid_post")
    sae.save(path)
    return path


def test_serve_refuses_an_inspect_output_of_another_sae(tmp_path, capsys):
    small, big = saved_sae(tmp_path / "small", 128, 0), saved_sae(tmp_path / "big", 256, 1)
    assert sae_hash(small) != sae_hash(big) and len(sae_hash(small)) == 64
    out = write_browser([{"id": 0, "contexts": CONTEXTS}], tmp_path / "insp", "big's",
                        sae_sha256=sae_hash(big))
    assert read_inspect_contexts(out.parent, big) == {0: CONTEXTS}
    with pytest.raises(ValueError, match=r"holds the contexts of another SAE \(weights sha256 "
                       rf"{sae_hash(big)[:12]}, not small's {sae_hash(small)[:12]}\)"):
        read_inspect_contexts(out.parent, small)
    # An output that records no hash cannot be checked: refused too, with the remedy.
    old = write_browser([{"id": 0, "contexts": CONTEXTS}], tmp_path / "old", "old")
    with pytest.raises(ValueError, match=r"records no SAE hash .* rerun `sae-lab inspect"):
        read_inspect_contexts(old.parent, small)
    assert read_inspect_contexts(old.parent) == {0: CONTEXTS}  # no SAE named: no check
    # The command: one line, exit 2, before any model is loaded.
    with pytest.raises(SystemExit) as e:
        main(["serve", str(small), "--inspect", str(out.parent), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sae-lab serve: error: ")
    assert "another SAE" in err[0]


def test_templates_ship_in_the_wheel_and_render_escaped():
    toml = (REPO / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    globs = json.loads(re.search(r'^"sae_lab\.reading" = (\[.*?\])', toml, re.M).group(1))
    files = sorted(p.name for p in (REPO / "sae_lab/reading" / TEMPLATES).iterdir())
    assert {"browser.html", "browser.js", "viewer.html", "viewer.js"} <= set(files)
    assert all(any(fnmatch.fnmatch(f"{TEMPLATES}/{f}", g) for g in globs) for f in files)
    # Inlined as they are: none may end the element it is inlined in.
    for name in files:
        if name.endswith((".js", ".css")):
            assert not re.search(r"</(script|style)", str(asset(name)), re.I), name
    html = render_html([], "s", title="<script>alert(1)</script>")
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "{{" not in html and str(asset("browser.js")) in html  # one self-contained file
    viewer = page("a <b> & c")
    assert "<title>a &lt;b&gt; &amp; c</title>" in viewer and str(asset("viewer.js")) in viewer
