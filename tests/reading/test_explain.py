"""`sae-lab explain` against a real local HTTP server speaking the OpenAI chat API.

The server answers by rule: the explanation names the most common marked token; detection picks
the excerpts containing that text (case-insensitive). With one-token contexts whose latent fires
exactly on one token, the detection score is known: 1.0. Some answers are made to fail on
purpose: a 429, a request answered too late, a malformed answer (re-asked), an always-malformed
latent.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from helpers.explain_data import Words, one_hot_blocks, run_explain, token_sae
from helpers.tiny import make_sae

from sae_lab.reading.contexts import TokenText, top_activations
from sae_lab.reading.explain import (
    EndpointError,
    HTTPChat,
    LocalChat,
    NothingExplained,
    balanced_accuracy,
    parse_detection,
    sample_rows,
    titles,
)


def rule_answer(messages: list[dict]) -> str:
    prompt = next(m["content"] for m in messages if m["role"] == "user")
    marked = re.findall(r"<<\s*(\w+)\s*>>", prompt)
    if marked:
        word = Counter(marked).most_common(1)[0][0]
        if word == "w05" or (word == "w03" and len(messages) == 2):
            return "I think this feature is about many things."  # malformed
        return f"TITLE: the word {word}\nEXPLANATION: fires on the token '{word}'."
    if "explained as" in prompt:
        word = re.search(r"'(\w+)'", prompt).group(1)
        lines = re.findall(r"^(\d+)\. (.*)$", prompt, re.M)
        hits = [int(i) for i, text in lines if word.lower() in text.lower()]
        return f"ANSWER: {hits}"
    return "OK"


class ChatServer:
    """A threading http.server on 127.0.0.1 speaking POST /v1/chat/completions."""

    def __init__(self, fail_first_with_429: bool = True, slow_request: int | None = 2) -> None:
        self.requests: list[dict] = []
        self.always_malformed = False
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    n = len(server.requests)
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if n == 1 and fail_first_with_429:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
                if n == slow_request:
                    time.sleep(1.0)  # longer than the client's timeout: it must retry
                text = rule_answer(body["messages"])
                if server.always_malformed and text != "OK":
                    text = "I think this feature is about many things."
                self._send(200, {"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": text}, "finish_reason": "stop"}]})

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout case)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_explain_over_http_known_scores_retries_and_cache(tmp_path):
    out = tmp_path / "explanations.json"
    slept = []
    with ChatServer() as server:
        chat = HTTPChat(server.url, "rule-based", timeout=0.5, retries=3, backoff=0.01,
                        sleep=slept.append)
        recs = run_explain(chat, out)
        n_first = len(server.requests)
        again = run_explain(chat, out)  # everything is cached: no request at all
        assert len(server.requests) == n_first
    assert again == recs == json.loads(out.read_text())
    assert slept[0] == 0.0  # the 429's Retry-After: 0, then the timed-out request's backoff
    assert len(slept) == 2
    for i in (0, 1, 7):
        r = recs[str(i)]
        assert r["status"] == "ok" and r["title"] == f"the word w{i:02d}"
        assert r["score"] == 1.0  # detection picks exactly the held-out activating contexts
        assert r["detection"] == {"n_active": 10, "n_inactive": 10, "true_pos": 10,
                                  "false_pos": 0}
        assert r["model"] == "rule-based"
    assert recs["3"]["status"] == "ok" and recs["3"]["score"] == 1.0  # re-asked once
    assert recs["5"]["status"] == "failed" and recs["5"]["score"] is None
    assert "malformed answer twice" in recs["5"]["error"]
    # Every request is a well-formed chat completion request.
    assert all(r["model"] == "rule-based" and r["messages"][0]["role"] == "system"
               for r in server.requests)
    assert titles(out) == {0: "the word w00", 1: "the word w01", 3: "the word w03",
                           7: "the word w07"}


def test_detection_context_mix_is_held_out_and_balanced():
    sae = token_sae()
    active, inactive = sample_rows(sae, one_hot_blocks(), [2], 30, 10, seed=1)
    ids = torch.cat([b["token_ids"] for b in one_hot_blocks()])
    assert (ids[active[0][active[0] >= 0]] == 2).all()  # sampled rows where latent 2 fires
    assert (ids[inactive[0]] != 2).all() and (inactive[0] >= 0).all()
    assert len(set(active[0].tolist())) == 30  # without replacement
    assert balanced_accuracy({1, 2, 3}, {1, 2, 3}, 6) == 1.0
    assert balanced_accuracy(set(range(1, 7)), {1, 2}, 6) == 0.5  # "all" is chance
    assert balanced_accuracy({1, 4}, {1, 2}, 4) == pytest.approx((0.5 + 0.5) / 2)
    assert parse_detection("Sure.\nANSWER: [2, 3]", 4) == {2, 3}


def test_unreachable_endpoint_is_one_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chat = HTTPChat(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff=0.01,
                    sleep=lambda s: None)
    with pytest.raises(EndpointError, match=r"^endpoint http://127.0.0.1:\d+/v1/chat/"
                       r"completions: unreachable .* \(after 2 tries\)$"):
        chat([{"role": "user", "content": "hi"}])


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "sae_lab.cli", *args], capture_output=True,
                          text=True, timeout=300, **kw)


@pytest.mark.slow
def test_explain_cli_on_tiny_gpt2(tiny_lm, tiny_shards, tmp_path):
    sae = make_sae()
    sae.metadata.update(model=str(tiny_lm), layer=1, hook="resid_post")
    sae.save(tmp_path / "sae")
    with ChatServer(fail_first_with_429=False, slow_request=None) as server:
        # --batch 2: this server never answers JSON, so every latent is asked alone.
        proc = _cli("explain", str(tmp_path / "sae"), "--shards", str(tiny_shards), "--latents",
                    "0-2", "--url", server.url, "--model", "rule", "--top", "5", "--sampled",
                    "2", "--held-out", "4", "--concurrency", "3", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    recs = json.loads((tmp_path / "sae" / "explanations.json").read_text())
    assert set(recs) == {"0", "1", "2"}
    assert all(r["status"] in ("ok", "dead") for r in recs.values())
    assert "saved:" in proc.stdout and "latent" in proc.stdout
    assert "asked about 3 latents, 0 more from the cache" in proc.stderr
    assert len(list((tmp_path / "sae" / "autointerp").glob("*/[0-9].json"))) == 3
    # Bad input: one line each, exit 2.
    bad = _cli("explain", str(tmp_path / "sae"), "--shards", str(tiny_shards), "--latents",
               "500")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("sae-lab explain: error: latent 500 does not exist: the SAE "
                                  "has 128 latents (0..127)")
    # A rerun with every latent cached (same model and settings) needs no endpoint; a new
    # latent does.
    cached = _cli("explain", str(tmp_path / "sae"), "--shards", str(tiny_shards), "--latents",
                  "0-2", "--url", "http://127.0.0.1:9/v1", "--model", "rule", "--top", "5",
                  "--sampled", "2", "--held-out", "4")
    assert cached.returncode == 0 and "all 3 latents already in" in cached.stdout
    down = _cli("explain", str(tmp_path / "sae"), "--shards", str(tiny_shards), "--latents", "3",
                "--url", "http://127.0.0.1:9/v1", "--retries", "0")
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1
    assert "unreachable" in down.stderr
    # Every latent asked about fails (latent 5's answers are always malformed): exit 2.
    with ChatServer(fail_first_with_429=False, slow_request=None) as server:
        server.always_malformed = True
        failed = _cli("explain", str(tmp_path / "sae"), "--shards", str(tiny_shards),
                      "--latents", "4-5", "--url", server.url, "--model", "rule")
    assert failed.returncode == 2, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]  # after each latent's progress line
    assert last.startswith("sae-lab explain: error: no latent was explained: all 2 asked failed")


def test_local_model_plumbing(tiny_lm, tmp_path):
    """A tiny random GPT-2 answers nonsense: the plumbing runs and records it as failed."""
    chat = LocalChat(str(tiny_lm), max_new_tokens=8)
    assert isinstance(chat([{"role": "user", "content": "Reply with OK."}]), str)
    with pytest.raises(NothingExplained, match="no latent was explained: all 2 asked failed"):
        run_explain(chat, tmp_path / "e.json", latents=(0, 1))
    recs = json.loads((tmp_path / "e.json").read_text())  # written all the same
    assert set(recs) == {"0", "1"}
    assert all(r["status"] == "failed" and "malformed" in r["error"] for r in recs.values())


def test_browser_shows_titles(tmp_path):
    """`sae-lab inspect` output gains the titles of explained latents (list, panel, search)."""
    from helpers.browser import chromium_dom

    from sae_lab.files import atomic_write_json
    from sae_lab.reading.browser import write_browser
    from sae_lab.reading.contexts import latent_records
    from sae_lab.reading.explain import attach_titles

    sae = token_sae()
    top = top_activations(sae, one_hot_blocks(), n=3)
    records = latent_records(top, [0, 1, 2], TokenText(Words()), left=2, right=1)
    atomic_write_json(tmp_path / "e.json", {
        "1": {"title": "the word w01", "explanation": "fires on 'w01'.", "score": 1.0},
        "2": {"title": "", "explanation": "", "score": None, "status": "failed"}})
    assert attach_titles(records, tmp_path / "e.json") == 1
    assert "title" not in records[0] and "title" not in records[2]
    index = write_browser(records, tmp_path / "b", summary="titles")
    dom, console = chromium_dom(index.as_uri() + "#q=word%20w01&latent=1")
    assert console == "" and 'data-ready="1"' in dom
    assert "#1  " in dom and "the word w01</button>" in dom  # the list item
    assert "Latent 1: the word w01</h2>" in dom and "fires on 'w01'." in dom  # the panel
    assert re.findall(r'<button [^>]*data-latent="(\d+)"', dom) == ["1"]  # search by title


def test_contexts_read_as_text_for_wordpiece_and_bpe(tiny_lm):
    """The LLM sees words, not `##` pieces glued together, with the activating piece marked."""
    import numpy as np

    from sae_lab.lm.attach import load_tokenizer
    from sae_lab.reading.contexts import TopActivations
    from sae_lab.reading.explain import _context

    text = "Load the mimetypes database from the Windows registry; parse it."
    for name in ("minilm", str(tiny_lm)):
        tok = load_tokenizer(name)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        top = TopActivations(torch.zeros(1), torch.zeros(1), torch.zeros(1), np.array(ids),
                             np.zeros(len(ids), dtype=np.int64))
        plain = _context(top, len(ids) - 3, TokenText(tok), 500, 4, mark=False)
        marked = _context(top, len(ids) - 3, TokenText(tok), 500, 4, mark=True)
        assert "##" not in marked and "Ġ" not in marked
        assert plain.lower().replace(" ;", ";") == text.lower()
        assert marked.replace("<<", "").replace(">>", "") == plain and "<<" in marked
