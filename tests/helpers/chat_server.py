"""A fake OpenAI-compatible chat server on 127.0.0.1 that answers explain's prompts by rule, one
latent per prompt or several (JSON keyed by latent), and counts what it sees.

The rule, on the one-token contexts of helpers.explain_data (latent j fires on word wJJ): the
explanation names the most common marked word; detection picks the excerpts holding that word,
except that it also picks every excerpt whose number is a multiple of 4 and misses every one whose
number is a multiple of 7. The scores are therefore not all 1.0 and depend on the order the
excerpts were shuffled into, yet they are the same whichever format the question came in.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LINE = re.compile(r"^(\d+)\. (.*)$", re.M)


def _word(section: str) -> str:
    marked = [w for w in re.findall(r"<<\s*(\w+)\s*>>", section) if w != "this"]  # the howto
    return Counter(marked).most_common(1)[0][0]


def _picks(word: str, section: str) -> list[int]:
    return [int(i) for i, text in LINE.findall(section)
            if (word in text or int(i) % 4 == 0) and int(i) % 7 != 0]


def _sections(prompt: str, head: str) -> dict[str, str]:
    parts = re.split(rf"^Feature (\d+){head}", prompt, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def rule_answer(prompt: str, drop: frozenset[int] = frozenset()) -> tuple[str, list[str]]:
    """(answer, words explained): the words name the latents whose explanation was asked for."""
    if "JSON object keyed by feature" in prompt:
        if "is explained as" in prompt:
            sections = _sections(prompt, r" is explained as: ")
            return json.dumps({k: _picks(re.search(r"'(\w+)'", s).group(1), s)
                               for k, s in sections.items() if int(k) not in drop}), []
        sections = _sections(prompt, r":$")
        words = {k: _word(s) for k, s in sections.items() if int(k) not in drop}
        return json.dumps({k: {"title": f"the word {w}",
                               "explanation": f"fires on the token '{w}'."}
                           for k, w in words.items()}), list(words.values())
    if "explained as" in prompt:
        word = re.search(r"'(\w+)'", prompt).group(1)
        return f"ANSWER: {_picks(word, prompt)}", []
    if "<<" in prompt:
        word = _word(prompt)
        return f"TITLE: the word {word}\nEXPLANATION: fires on the token '{word}'.", [word]
    return "OK", []


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # listen() backlog; http.server's 5 drops connections at 16 at once
    daemon_threads = True


class FakeChatServer:
    """POST /v1/chat/completions answered by `rule_answer`.

    gate: the first `gate` requests each wait until all of them have arrived (a barrier), so a
    client that does not really send them at once fails instead of passing by luck.
    fail_after: after this many answers, every request gets HTTP 500.
    drop: latents left out of every JSON answer (the client must ask them alone).
    delay: seconds each request takes.
    """

    def __init__(self, gate: int = 0, fail_after: int | None = None,
                 drop: frozenset[int] = frozenset(), delay: float = 0.0) -> None:
        self.requests = self.answered = self.in_flight = self.max_in_flight = 0
        self.explained: list[str] = []
        self.fail_after = fail_after
        self.lock = threading.Lock()
        barrier = threading.Barrier(gate) if gate else None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    n = server.requests
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                code, text = 200, ""
                try:
                    if barrier is not None and n <= barrier.parties:
                        barrier.wait(timeout=5)
                    time.sleep(delay)
                    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
                    text, words = rule_answer(prompt, drop)
                except threading.BrokenBarrierError:
                    code = 503
                with server.lock:
                    # Out of flight before the answer leaves: the client cannot send its next
                    # request while this one still counts.
                    server.in_flight -= 1
                    if server.fail_after is not None and server.answered >= server.fail_after:
                        code = 500
                    if code == 200:
                        server.answered += 1
                        server.explained += words
                obj = ({"choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": text}}]}
                       if code == 200 else {"error": "down"})
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)  # polls for shutdown every 0.05 s

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
