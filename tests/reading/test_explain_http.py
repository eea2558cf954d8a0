"""`HTTPChat` against hostile servers on 127.0.0.1: each misbehaves in one way, and the client
must fail in one line that names the endpoint and never holds the API key.

Every server is a threading http.server bound to 127.0.0.1 on a free port; its handlers stop by
themselves (a bounded number of bytes, or when the client has gone), and it is shut down at the
end of its test.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers.explain_data import run_explain

from sae_lab.reading.explain import EndpointError, HTTPChat, NothingExplained

KEY = "sk-test-5ecret-DO-NOT-PRINT"
HELLO = [{"role": "user", "content": "hi"}]


def completion(text: str) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": text}}]}).encode()


class Server:
    """http.server on 127.0.0.1 whose POST handler is `behave(handler)`; records the headers of
    every request it gets."""

    def __init__(self, behave: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.headers.append(dict(self.headers))
                try:
                    behave(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: the handler ends

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "application/json",
         headers: dict[str, str] | None = None) -> None:
    h.send_response(code)
    for k, v in {"Content-Type": ctype, "Content-Length": str(len(body)),
                 **(headers or {})}.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def chat(url: str, **kw) -> HTTPChat:
    return HTTPChat(url, "m", api_key=KEY, **{"retries": 0, "timeout": 5.0, "backoff": 0.01,
                                              "sleep": lambda s: None, **kw})


def fails(client: HTTPChat, pattern: str) -> str:
    with pytest.raises(EndpointError) as e:
        client(HELLO)
    msg = str(e.value)
    assert msg.startswith(f"endpoint {client.endpoint}: "), msg
    assert KEY not in msg and "\n" not in msg, msg
    assert re.search(pattern, msg), msg
    return msg


def test_a_sound_server_answers_also_from_a_running_event_loop():
    with Server(lambda h: send(h, 200, completion("OK"))) as server:
        client = chat(server.url)
        assert client(HELLO) == "OK"

        async def inside_a_loop():  # as in a notebook: the request runs in another thread
            return client(HELLO)

        assert asyncio.run(inside_a_loop()) == "OK"
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(client)


def drip_body(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "200")
    h.end_headers()
    for _ in range(200):  # one byte every 0.2 s: each read succeeds, the whole never ends
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.2)


def drip_headers(h: BaseHTTPRequestHandler) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(200):
        h.wfile.write(b"X")
        h.wfile.flush()
        time.sleep(0.2)


@pytest.mark.parametrize("behave", [drip_body, drip_headers])
def test_a_dripping_server_fails_at_the_deadline_not_per_read(behave):
    with Server(behave) as server:
        start = time.monotonic()
        fails(chat(server.url, timeout=1.0), r"no complete answer within 1 s \(after 1 try\)$")
        took = time.monotonic() - start
    assert took < 3.0  # a per-read timeout would wait 200 x 0.2 s


def test_an_oversized_answer_is_refused_without_reading_it_all():
    big = b"[" + b"0," * 4_000_000 + b"0]"  # 8 MB

    def oversize_unannounced(h):  # no Content-Length: read until the cap
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Connection", "close")
        h.end_headers()
        for i in range(0, len(big), 65536):
            h.wfile.write(big[i:i + 65536])

    with Server(lambda h: send(h, 200, big)) as server:
        fails(chat(server.url, max_bytes=100_000),
              r"the answer is 8000003 bytes, more than the 100000 accepted")
    with Server(oversize_unannounced) as server:
        fails(chat(server.url, max_bytes=100_000),
              r"more than the 100000 bytes accepted; stopped reading")


def test_a_redirect_to_another_host_is_not_followed_and_the_key_stays_home():
    with Server(lambda h: send(h, 200, completion("stolen"))) as other:
        location = f"http://127.0.0.1:{other.port}/v1/chat/completions?key={KEY}"
        with Server(lambda h: send(h, 302, b"", headers={"Location": location})) as server:
            msg = fails(chat(server.url), r"HTTP 302, a redirect to http://127\.0\.0\.1:\d+/v1/"
                        r"chat/completions\?key=<api key>, not followed")
    assert server.headers and server.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert other.headers == []  # not a request, so no Authorization header, reached it
    assert "use the final URL" in msg


@pytest.mark.parametrize("code", [401, 500])
def test_an_error_body_echoing_the_key_is_redacted(code):
    body = json.dumps({"error": f"invalid api key: Bearer {KEY}\n(check it)"}).encode()
    with Server(lambda h: send(h, code, body)) as server:
        fails(chat(server.url, retries=1), rf"HTTP {code} .*invalid api key: Bearer "
              r"<api key>")
    assert len(server.headers) == (2 if code == 500 else 1)  # 5xx retried, 4xx not


def test_a_non_json_answer_names_the_endpoint():
    page = b"<html><body>Welcome to the web UI</body></html>"
    with Server(lambda h: send(h, 200, page, ctype="text/html")) as server:
        fails(chat(server.url), r"the answer is not JSON \(HTTP 200, text/html: '<html><body>"
              r"Welcome")
    with Server(lambda h: send(h, 200, b'{"answer": 42}')) as server:
        fails(chat(server.url), r"not an OpenAI chat completion")


def test_a_run_where_every_latent_fails_is_an_error(tmp_path):
    """A server that always answers out of format: every latent fails, and the run says so."""
    out = tmp_path / "e.json"
    with Server(lambda h: send(h, 200, completion("Sure! Nice feature."))) as server:
        with pytest.raises(NothingExplained, match=r"^no latent was explained: all 2 asked "
                           r"failed \(latent 0: explanation: malformed answer twice"):
            run_explain(chat(server.url), out, latents=(0, 1))
    assert isinstance(NothingExplained("x"), ValueError)  # the CLI: one line, exit 2
    recs = json.loads(out.read_text())
    assert {k: r["status"] for k, r in recs.items()} == {"0": "failed", "1": "failed"}
