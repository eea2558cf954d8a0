"""A local HTTP server speaking the Hub endpoints that `HfApi.create_repo` and
`HfApi.upload_folder` call (hf_xet not installed: the single-commit path):

    POST /api/validate-yaml                          {"content": README.md} -> {}
    POST /api/repos/create                          {"name", "organization", ...} -> {"url"}
    POST /api/models/OWNER/NAME/preupload/REV        {"files": [{path, sample, size}]}
                                                     -> every file "regular" (no LFS)
    POST /api/models/OWNER/NAME/commit/REV           ndjson: a header line, then one line per
                                                     file {"key": "file", "value": {content,
                                                     path, encoding: base64}} -> {"commitUrl",
                                                     "commitOid"}
    POST /api/models/OWNER/NAME/branch/REV           -> {}

Everything received is kept in `FakeHub` (repos, files by path, commit headers, whether each
request had an Authorization header). 127.0.0.1 only, daemon threads, stopped by `close`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.commits: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.branches: list[str] = []
        self.authorized: list[bool] = []
        self.paths: list[str] = []
        self.cards: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.authorized.append(bool(self.headers.get("Authorization")))
                hub.paths.append(self.path)
                status, reply = hub.answer(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_PUT = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll: close() (shutdown) waits up to one poll interval
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def answer(self, path: str, body: bytes) -> tuple[int, Any]:
        path = path.split("?")[0]
        if path == "/api/validate-yaml":  # a README.md with a metadata block is checked first
            self.cards.append(json.loads(body)["content"])
            return 200, {}
        if path == "/api/repos/create":
            req = json.loads(body)
            self.created.append(req)
            return 200, {"url": f"{self.url}/{req['organization']}/{req['name']}"}
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if not m:
            return 404, {"error": f"not served: {path}"}
        repo, what, rev = m.groups()
        if what == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                    "shouldIgnore": False} for f in files]}
        if what == "branch":
            self.branches.append(rev)
            return 200, {}
        lines = [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()]
        self.commits.append({"repo": repo, "revision": rev, **lines[0]["value"]})
        for ln in lines[1:]:
            if ln["key"] == "file":
                self.files[ln["value"]["path"]] = base64.b64decode(ln["value"]["content"])
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@contextmanager
def serving(monkeypatch, tmp_path, token: str | None) -> Iterator[FakeHub]:
    """A FakeHub that huggingface_hub talks to (HF_ENDPOINT), with HF_TOKEN=`token` (None: no
    token) and no saved login (HF_HOME under tmp_path), online."""
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", token or "")  # undone after the test, whoever sets it later
    if token is None:
        monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        yield server
    finally:
        server.close()
