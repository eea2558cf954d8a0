"""Explain latents with an LLM, and score each explanation by detection.

    contexts   top-activating contexts (contexts.top_activations) plus contexts sampled uniformly
               among all the rows a latent fires on, and rows where it does not fire
    explain    the LLM sees the top and sampled contexts, the activating token marked <<so>>,
               and answers with a short title and a one-sentence explanation
    detect     the LLM gets the explanation and a shuffled mix of held-out activating and
               non-activating contexts (unmarked) and lists the ones that activate; the score is
               balanced accuracy = (TPR + TNR) / 2, so always answering "all" or "none" scores 0.5
               (the detection score of Paulo et al. 2024, delphi, and SAEBench's autointerp)

    batch      several latents in one explain prompt and one detect prompt, answered as JSON
               keyed by latent; a latent whose part does not parse is asked alone
    run        explain_all: a thread per prompt in flight, each record saved as it is done

The LLM is any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp's server) reached with
httpx, or an in-process transformers causal LM. `explain` writes a JSON file
({"<latent>": {"title", "explanation", "score", ...}}) rewritten atomically after every latent, so
an interrupted run continues where it stopped; reading.autointerp runs a sample at scale with a
per-latent cache (that is `sae-lab explain`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sae_lab.files import atomic_write_json

if TYPE_CHECKING:  # torch and httpx are imported where they run: `--help` stays fast
    import httpx
    import torch

    from sae_lab.reading.contexts import TokenText, TopActivations
    from sae_lab.sae.base import SAE

EXPLANATIONS = "explanations.json"
Message = dict[str, str]


class EndpointError(OSError):
    """The chat endpoint cannot be reached or keeps failing: the whole run stops (one line)."""


class NothingExplained(ValueError):
    """Every latent the LLM was asked about came back failed (one line, naming the first error)."""


class MalformedAnswer(ValueError):
    """An answer that does not follow the requested format."""


class Chat(Protocol):
    name: str

    def __call__(self, messages: list[Message]) -> str: ...


# --- chat backends -----------------------------------------------------------------------------

MAX_ANSWER_BYTES = 4 * 2**20
"""The largest answer body read from a chat endpoint; a larger one is an error."""


class _Transient(Exception):
    """A failure worth retrying (a timeout, a lost connection, a 5xx or 429 answer)."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


@dataclass
class HTTPChat:
    """POST {url}/chat/completions (OpenAI chat API) with httpx, retried with backoff.

    Each request has one deadline, `timeout` seconds for the whole of it (connecting, sending,
    waiting, reading), however slowly the server trickles bytes. Answers larger than `max_bytes`
    are refused, redirects are not followed (the API key would travel with them), and no error
    message holds the API key. Timeouts, connection errors and 5xx answers are retried with
    exponential backoff; a 429 waits for its Retry-After header (seconds) when it has one. Other
    4xx answers, redirects, oversized and non-JSON answers fail at once.
    """

    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_wait: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 300
    max_bytes: int = MAX_ANSWER_BYTES
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    _ssl: Any = field(default=None, init=False, repr=False, compare=False)
    _ssl_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                      compare=False)

    @property
    def name(self) -> str:
        return self.model

    def _ssl_context(self) -> Any:
        """One SSL context for every request: loading the certificates takes ~70 ms of CPU,
        which would cap concurrent requests at ~15/s if each client loaded them again."""
        import httpx

        with self._ssl_lock:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            return self._ssl

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/chat/completions"

    def __call__(self, messages: list[Message]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "stream": False}
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            try:
                return self._text(self._post(body))
            except _Transient as e:
                last = str(e)
                wait = wait if e.wait is None else e.wait
            if attempt < self.retries:
                self.sleep(min(wait, self.max_wait))
        tries = "1 try" if self.retries == 0 else f"{self.retries + 1} tries"
        raise self._error(f"{last} (after {tries})")

    def _error(self, reason: str) -> EndpointError:
        """A one-line error naming the endpoint, the API key blanked out wherever it appears."""
        msg = " ".join(f"endpoint {self.endpoint}: {reason}".split())
        if self.api_key:
            msg = msg.replace(self.api_key, "<api key>")
        return EndpointError(msg)

    def _text(self, payload: Any) -> str:
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise self._error(f"not an OpenAI chat completion ({str(payload)[:120]})") from None

    def _post(self, body: dict[str, Any]) -> Any:
        """One request under one deadline: the answer's JSON."""
        import httpx

        # Made here, so that importing httpx and loading certificates are not timed.
        client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                   verify=self._ssl_context())
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._attempt(client, body))
        with ThreadPoolExecutor(1) as pool:  # called from a running loop (a notebook)
            return pool.submit(asyncio.run, self._attempt(client, body)).result()

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        try:
            return await asyncio.wait_for(self._request(client, body), self.timeout)
        except asyncio.TimeoutError:
            raise _Transient(f"no complete answer within {self.timeout:g} s") from None

    async def _request(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        import httpx

        headers = {"Accept-Encoding": "identity"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            async with client, client.stream("POST", self.endpoint, json=body,
                                             headers=headers) as resp:
                return await self._answer(resp)
        except httpx.TimeoutException:
            raise _Transient(f"no complete answer within {self.timeout:g} s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            raise self._error(f"not a usable URL ({e})") from None
        except httpx.ConnectError as e:
            raise _Transient(f"unreachable ({e or type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _Transient(f"connection failed ({e or type(e).__name__})") from None

    async def _answer(self, resp: httpx.Response) -> Any:
        code = resp.status_code
        if resp.has_redirect_location or 300 <= code < 400:
            raise self._error(f"answered HTTP {code}, a redirect to "
                              f"{resp.headers.get('location', '(no location)')}, not followed "
                              "(the API key would go with it): use the final URL")
        if not 200 <= code < 300:
            detail = (await self._read(resp, 2048, strict=False)).decode(errors="replace")
            reason = f"HTTP {code} {detail[:200]}".strip()
            if code == 429:
                raise _Transient(reason, _retry_after(resp.headers.get("Retry-After"), None))
            if code >= 500:
                raise _Transient(reason)
            raise self._error(reason)
        data = await self._read(resp, self.max_bytes, strict=True)
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            kind = resp.headers.get("content-type", "no Content-Type")
            text = data[:80].decode(errors="replace")
            raise self._error(f"the answer is not JSON (HTTP {code}, {kind}: {text!r})") from None

    async def _read(self, resp: httpx.Response, cap: int, strict: bool) -> bytes:
        """The body, at most `cap` bytes: past them, an error (`strict`) or the first `cap`."""
        size = resp.headers.get("content-length", "")
        if strict and size.isdigit() and int(size) > cap:
            raise self._error(f"the answer is {int(size)} bytes, more than the {cap} accepted")
        buf = bytearray()
        async for chunk in resp.aiter_bytes():
            buf += chunk
            if len(buf) > cap:
                if strict:
                    raise self._error(f"the answer is more than the {cap} bytes accepted; "
                                      "stopped reading")
                break
        return bytes(buf[:cap])


def _retry_after(header: str | None, default: float | None) -> float | None:
    try:
        return max(0.0, float(header)) if header is not None else default
    except ValueError:  # an HTTP date: not worth parsing, back off instead
        return default


class LocalChat:
    """An in-process transformers causal LM (a local directory; never remote code), greedy.
    Loaded at the first question (a run whose latents are all cached never loads it); one
    question at a time."""

    def __init__(self, path: str, device: str = "cpu", max_new_tokens: int = 200) -> None:
        self.path, self.device = path, device
        self.name = str(path)
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def __call__(self, messages: list[Message]) -> str:
        with self._lock:
            if self._loaded is None:
                from sae_lab.lm.attach import load_lm

                self._loaded = load_lm(self.path, self.device)
            return self._generate(messages, *self._loaded)

    def _generate(self, messages: list[Message], model: Any, tok: Any) -> str:
        import torch

        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)["input_ids"]
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            ids = tok(text, return_tensors="pt")["input_ids"]
        ids = ids.to(next(model.parameters()).device)
        limit = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None)
        if limit:
            ids = ids[:, -(limit - self.max_new_tokens):]  # keep the end: it holds the question
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=self.max_new_tokens, pad_token_id=pad)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# --- contexts ----------------------------------------------------------------------------------


def sample_rows(sae: SAE, blocks: Iterable[dict[str, Any]], latents: list[int], n_active: int,
                n_inactive: int, seed: int = 0, batch_size: int = 4096,
                max_tokens: int | None = None, device: str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(active, inactive) row indices, each [len(latents), n] (-1 where too few): uniform
    samples of the rows where each latent fires / does not fire.

    Each row gets a random key per latent; keeping the n smallest keys seen is a uniform sample
    without replacement of one streaming pass.
    """
    import torch

    with torch.no_grad():
        return _sample_rows(sae, blocks, latents, n_active, n_inactive, seed, batch_size,
                            max_tokens, device)


def _sample_rows(sae: SAE, blocks: Iterable[dict[str, Any]], latents: list[int], n_active: int,
                 n_inactive: int, seed: int, batch_size: int, max_tokens: int | None,
                 device: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.tensor(latents, dtype=torch.long)
    keys = {name: torch.full((len(latents), n), float("inf"))
            for name, n in (("on", n_active), ("off", n_inactive))}
    rows = {name: torch.full_like(k, -1, dtype=torch.long) for name, k in keys.items()}
    seen = 0
    for block in blocks:
        acts = block["acts"]
        keep = acts.shape[0] if max_tokens is None else min(acts.shape[0], max_tokens - seen)
        for start in range(0, keep, batch_size):
            x = acts[start : min(keep, start + batch_size)].to(device, sae.W_enc.dtype)
            fired = (sae.encode(x)[:, idx.to(device)] > 0).T.cpu()  # [L, B]
            r = torch.rand(fired.shape, generator=gen)
            at = torch.arange(fired.shape[1]) + seen + start
            for name, mask in (("on", fired), ("off", ~fired)):
                k = r.masked_fill(~mask, float("inf"))
                cand_k = torch.cat([keys[name], k], dim=1)
                cand_r = torch.cat([rows[name], at.expand_as(k)], dim=1)
                n = keys[name].shape[1]
                keys[name], pick = cand_k.topk(n, dim=1, largest=False)
                rows[name] = cand_r.gather(1, pick)
        seen += keep
        if max_tokens is not None and seen >= max_tokens:
            break
    for name in keys:
        rows[name] = rows[name].masked_fill(keys[name].isinf(), -1)
    return rows["on"], rows["off"]


@dataclass
class Evidence:
    """What the LLM sees of one latent."""

    shown: list[str]
    """Contexts for the explanation, activating token marked <<so>> (top ones first)."""
    held_out: list[str]
    """Activating contexts kept back for detection (unmarked)."""
    inactive: list[str]
    """Contexts where the latent does not fire (unmarked)."""


def _context(top: TopActivations, row: int, text: TokenText, left: int, right: int,
             mark: bool) -> str:
    """The window as the text reads (decoded whole, so `##`, `Ġ`, `▁` pieces join as words),
    the activating token marked <<so>>; pieces decoded one by one when that does not line up."""
    from sae_lab.reading.contexts import context_window

    ids, at = context_window(top, row, left, right)
    dec = text.tokenizer.decode
    before, upto, whole = dec(ids[:at]), dec(ids[: at + 1]), dec(ids)
    if upto.startswith(before) and whole.startswith(upto) and upto != before:
        s = before + (f"<<{upto[len(before):]}>>" if mark else upto[len(before):]) + \
            whole[len(upto):]
    else:
        toks = [text(t) for t in ids]
        if mark:
            toks[at] = f"<<{toks[at]}>>"
        s = "".join(toks)
    return " ".join(s.split())


def gather_evidence(top: TopActivations, latent_pos: int, latent: int, active: torch.Tensor,
                    inactive: torch.Tensor, text: TokenText, n_top: int, n_sampled: int,
                    n_held_random: int, left: int = 12, right: int = 4) -> Evidence:
    """The top `n_top` contexts and `n_sampled` random activating ones (not among the top ones)
    are shown; the rest of the top pass and `n_held_random` more random activating contexts are
    held out, with as many non-activating contexts."""
    top_rows = [r for r in top.rows[latent].tolist() if r >= 0]
    tops = set(top_rows)
    rand_rows = [r for r in active[latent_pos].tolist() if r >= 0 and r not in tops]
    rand_rows = rand_rows[: n_sampled + n_held_random]
    shown_rows = top_rows[:n_top] + rand_rows[:n_sampled]
    held_rows = top_rows[n_top:] + rand_rows[n_sampled:]
    off_rows = [r for r in inactive[latent_pos].tolist() if r >= 0][: len(held_rows)]
    return Evidence(
        [_context(top, r, text, left, right, True) for r in shown_rows],
        [_context(top, r, text, left, right, False) for r in held_rows],
        [_context(top, r, text, left, right, False) for r in off_rows],
    )


# --- prompts and answers -----------------------------------------------------------------------

SYSTEM = ("You are studying one feature of a sparse autoencoder trained on a language model's "
          "activations. Answer in exactly the format asked for.")

EXPLAIN_PROMPT = """Below are text excerpts where the feature fires. In each, the token where it \
fires is marked like <<this>>. Excerpts:

{examples}

What does the feature respond to? Reply with exactly two lines:
TITLE: <at most 6 words>
EXPLANATION: <one sentence>"""

DETECT_PROMPT = """A feature is explained as: {explanation}

Which of the numbered excerpts below contain a token where this feature fires?

{examples}

Reply with one line: ANSWER: followed by the list of their numbers, e.g. ANSWER: [1, 4], or \
ANSWER: [] if none."""

RETRY_NOTE = "Your reply did not follow the format. {problem} Reply again in exactly the format."

# Several latents in one prompt: the same questions, answered as JSON keyed by latent.
EXPLAIN_BATCH_PROMPT = """Below are text excerpts for each of {n} features. In each excerpt, the \
token where the feature fires is marked like <<this>>.

{features}

What does each feature respond to? Reply with only a JSON object keyed by feature number, e.g. \
{example}"""

EXAMPLE_NOTE = {"title": "<at most 6 words>", "explanation": "<one sentence>"}

DETECT_BATCH_PROMPT = """Each feature below is given with its explanation and numbered excerpts. \
For each feature, which of its excerpts contain a token where that feature fires?

{features}

Reply with only a JSON object keyed by feature number whose values list those excerpt numbers \
([] if none), e.g. {example}"""


def parse_explanation(answer: str) -> tuple[str, str]:
    title = re.search(r"^\W*title\W*:\s*(.+)$", answer, re.I | re.M)
    expl = re.search(r"^\W*explanation\W*:\s*(.+)$", answer, re.I | re.M)
    if not title or not expl:
        raise MalformedAnswer("expected the lines TITLE: ... and EXPLANATION: ...")
    return title.group(1).strip().strip("*").strip(), expl.group(1).strip().strip("*").strip()


def parse_detection(answer: str, n: int) -> set[int]:
    """Numbers (1-based) named after ANSWER:, each within 1..n."""
    m = re.search(r"answer\W*:?\s*\[([^\]]*)\]", answer, re.I)
    if not m:
        raise MalformedAnswer("expected ANSWER: [numbers]")
    picks = {int(t) for t in re.findall(r"\d+", m.group(1))}
    if any(not 1 <= p <= n for p in picks):
        raise MalformedAnswer(f"numbers must be between 1 and {n}")
    return picks


def ask(chat: Chat, prompt: str, parse: Callable[[str], Any]) -> Any:
    """Ask, and re-ask once (naming the problem) when the answer is malformed."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    answer = chat(messages)
    try:
        return parse(answer)
    except MalformedAnswer as e:
        messages += [{"role": "assistant", "content": answer},
                     {"role": "user", "content": RETRY_NOTE.format(problem=e)}]
        return parse(chat(messages))  # a second MalformedAnswer is the caller's to record


def balanced_accuracy(picked: set[int], active: set[int], n: int) -> float:
    """(TPR + TNR) / 2 over items 1..n, `active` being the truly activating ones."""
    inactive = set(range(1, n + 1)) - active
    tpr = len(picked & active) / len(active) if active else 1.0
    tnr = len(inactive - picked) / len(inactive) if inactive else 1.0
    return (tpr + tnr) / 2


def _dead() -> dict[str, Any]:
    return {"title": "", "explanation": "", "score": None, "status": "dead",
            "error": "it never fired on the inspected tokens"}


def _explained(title: str, explanation: str, ev: Evidence) -> dict[str, Any]:
    return {"title": title, "explanation": explanation, "score": None, "status": "ok",
            "n_shown": len(ev.shown)}


def _numbered(texts: Iterable[str]) -> str:
    return "\n".join(f"{i}. {c}" for i, c in enumerate(texts, 1))


def detection_items(ev: Evidence, seed: int) -> list[tuple[str, bool]] | None:
    """The held-out activating and the non-activating contexts, shuffled by `seed`, each with
    whether it activates; None when either kind is missing."""
    if not ev.held_out or not ev.inactive:
        return None
    items = [(c, True) for c in ev.held_out] + [(c, False) for c in ev.inactive]
    random.Random(seed).shuffle(items)
    return items


def _scored(rec: dict[str, Any], picked: set[int], items: list[tuple[str, bool]]
            ) -> dict[str, Any]:
    truth = {i for i, (_, on) in enumerate(items, 1) if on}
    rec["score"] = round(balanced_accuracy(picked, truth, len(items)), 4)
    rec["detection"] = {"n_active": len(truth), "n_inactive": len(items) - len(truth),
                        "true_pos": len(picked & truth), "false_pos": len(picked - truth)}
    return rec


def _detect(chat: Chat, rec: dict[str, Any], ev: Evidence, seed: int) -> dict[str, Any]:
    items = detection_items(ev, seed)
    if items is None:
        rec["error"] = "detection skipped: too few held-out activating or non-activating contexts"
        return rec
    prompt = DETECT_PROMPT.format(explanation=rec["explanation"],
                                  examples=_numbered(c for c, _ in items))
    try:
        picked = ask(chat, prompt, lambda a: parse_detection(a, len(items)))
    except MalformedAnswer as e:
        rec.update(status="failed", error=f"detection: malformed answer twice ({e})")
        return rec
    return _scored(rec, picked, items)


def explain_latent(chat: Chat, ev: Evidence, seed: int = 0) -> dict[str, Any]:
    """One latent's record: title, explanation, detection score (balanced accuracy)."""
    if not ev.shown:
        return _dead()
    try:
        title, explanation = ask(chat, EXPLAIN_PROMPT.format(examples=_numbered(ev.shown)),
                                 parse_explanation)
    except MalformedAnswer as e:
        return {"title": "", "explanation": "", "score": None, "status": "failed",
                "error": f"explanation: malformed answer twice ({e})"}
    return _detect(chat, _explained(title, explanation, ev), ev, seed)


def _ask_json(chat: Chat, prompt: str) -> dict[str, Any]:
    """One question whose answer is a JSON object; {} when it is not one (not re-asked: the
    latents of an answer that does not parse are asked one by one instead)."""
    answer = chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}])
    start, end = answer.find("{"), answer.rfind("}")  # tolerate ```json fences and chatter
    try:
        obj = json.loads(answer[start : end + 1]) if 0 <= start < end else None
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return {}
    return {re.sub(r"\D", "", str(k)): v for k, v in obj.items()}  # "Feature 12" -> "12"


def _batch_explanation(got: Any) -> tuple[str, str] | None:
    if not isinstance(got, dict):
        return None
    title, expl = got.get("title"), got.get("explanation")
    if not (isinstance(title, str) and isinstance(expl, str) and title.strip()
            and expl.strip()):
        return None
    return title.strip(), expl.strip()


def _batch_picks(got: Any, n: int) -> set[int] | None:
    if not isinstance(got, list) or not all(type(p) is int and 1 <= p <= n for p in got):
        return None
    return set(got)


def explain_group(chat: Chat, group: list[tuple[int, Evidence]], seed: int = 0
                  ) -> dict[int, dict[str, Any]]:
    """Records of several latents asked together: one explanation prompt and one detection
    prompt for all, each answered as JSON keyed by latent. A latent whose part of an answer is
    missing or malformed is asked alone (explain_latent, or its detection alone), so with an
    LLM that answers both formats alike the records are the same as one latent per prompt.
    Latent `l` uses seed + l, as explain_latent does."""
    recs = {latent: _dead() for latent, ev in group if not ev.shown}
    live = [(latent, ev) for latent, ev in group if ev.shown]
    if len(live) < 2:
        return recs | {latent: explain_latent(chat, ev, seed + latent) for latent, ev in live}
    sections = "\n\n".join(f"Feature {latent}:\n{_numbered(ev.shown)}" for latent, ev in live)
    answers = _ask_json(chat, EXPLAIN_BATCH_PROMPT.format(n=len(live), features=sections,
                                                          example=_example(live, EXAMPLE_NOTE)))
    explained: list[tuple[int, Evidence, dict[str, Any]]] = []
    for latent, ev in live:
        got = _batch_explanation(answers.get(str(latent)))
        if got is None:
            recs[latent] = explain_latent(chat, ev, seed + latent)
        else:
            explained.append((latent, ev, _explained(*got, ev)))
    to_detect = []
    for latent, ev, rec in explained:
        items = detection_items(ev, seed + latent)
        if items is None:
            recs[latent] = _detect(chat, rec, ev, seed + latent)  # records why it is skipped
        else:
            to_detect.append((latent, ev, rec, items))
    answers = {}
    if len(to_detect) > 1:
        sections = "\n\n".join(
            f"Feature {latent} is explained as: {rec['explanation']}\n"
            f"{_numbered(c for c, _ in items)}" for latent, _, rec, items in to_detect)
        answers = _ask_json(chat, DETECT_BATCH_PROMPT.format(
            features=sections, example=_example(to_detect, [1, 4])))
    for latent, ev, rec, items in to_detect:
        picked = _batch_picks(answers.get(str(latent)), len(items))
        recs[latent] = (_detect(chat, rec, ev, seed + latent) if picked is None
                        else _scored(rec, picked, items))
    return {latent: recs[latent] for latent, _ in group}


def _example(group: list[tuple[Any, ...]], value: Any) -> str:
    return json.dumps({str(g[0]): value for g in group[:2]})


def explain_all(chat: Chat, evidence: dict[int, Evidence], save: Callable[[int, dict], None],
                seed: int = 0, concurrency: int = 1, batch: int = 1) -> None:
    """Explain and score every latent of `evidence`, `batch` latents per prompt, `concurrency`
    prompts in flight (a thread each). `save(latent, record)` is called in this thread as each
    latent is done, so an interrupted run loses only the latents in flight. An EndpointError
    stops the run: nothing more is sent, the latents in flight are saved as they finish, and it
    is raised. Ctrl-C, or any error, cancels what has not started."""
    latents = list(evidence)
    groups = [latents[i : i + batch] for i in range(0, len(latents), batch)]
    stop = threading.Event()

    def work(group: list[int]) -> dict[int, dict[str, Any]]:
        if stop.is_set():
            return {}
        try:
            return explain_group(chat, [(latent, evidence[latent]) for latent in group], seed)
        except BaseException:
            stop.set()
            raise

    failure: BaseException | None = None
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="explain") as pool:
        futures = [pool.submit(work, g) for g in groups]
        try:
            for done in as_completed(futures):
                try:
                    recs = done.result()
                except EndpointError as e:
                    failure = failure or e
                    continue
                for latent, rec in recs.items():
                    save(latent, rec)
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise
    if failure is not None:
        raise failure


# --- the whole run -----------------------------------------------------------------------------


def read_explanations(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The cache file, or {} when there is none; a broken file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not an explanations file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an explanations file (expected a JSON object)")
    return data


def titles(path: str | os.PathLike) -> dict[int, str]:
    """{latent: title} of the latents explained in `path` (for browsers and tables)."""
    return {int(k): v["title"] for k, v in read_explanations(path).items()
            if isinstance(v, dict) and v.get("title")}


def attach_titles(records: list[dict[str, Any]], path: str | os.PathLike) -> int:
    """Add "title" and "explanation" to latent records (browser / features) from an
    explanations file, when it exists; returns how many records got one."""
    notes = read_explanations(path)
    n = 0
    for rec in records:
        note = notes.get(str(rec["id"]))
        if isinstance(note, dict) and note.get("title"):
            rec["title"] = note["title"]
            rec["explanation"] = note.get("explanation") or ""
            n += 1
    return n


def needs_asking(rec: dict[str, Any] | None, redo_failed: bool) -> bool:
    return not rec or (redo_failed and rec.get("status") == "failed")


def progress(latent: int, rec: dict[str, Any]) -> str:
    score = "-" if rec["score"] is None else f"{rec['score']:.2f}"
    return f"latent {latent}: {rec['status']}, score {score}: {rec['title'] or rec['error']}"


def check_explained(new: dict[int, dict[str, Any]], where: str | os.PathLike) -> None:
    """NothingExplained when the LLM was asked about some latents and every one failed."""
    asked = [(latent, r) for latent, r in sorted(new.items()) if r["status"] != "dead"]
    failed = [(latent, r) for latent, r in asked if r["status"] == "failed"]
    if asked and len(failed) == len(asked):
        latent, rec = failed[0]
        raise NothingExplained(f"no latent was explained: all {len(asked)} asked failed (latent "
                               f"{latent}: {rec['error']}); records in {where}; --redo-failed "
                               "retries them")


def explain(sae: SAE, top: TopActivations, active: torch.Tensor, inactive: torch.Tensor,
            latents: list[int], text: TokenText, chat: Chat, out: str | os.PathLike,
            n_top: int = 10, n_sampled: int = 5, n_held_random: int = 5, left: int = 12,
            right: int = 4, redo_failed: bool = False, seed: int = 0,
            say: Callable[[str], None] = lambda s: None, concurrency: int = 1,
            batch: int = 1) -> dict[str, dict[str, Any]]:
    """Explain and score `latents`, skipping those already in `out`; `out` is rewritten after
    every latent (explain_all runs them). When the LLM was asked about some latents and every
    one of them failed, raises NothingExplained (after writing `out`)."""
    done = read_explanations(out)
    evidence = {latent: gather_evidence(top, pos, latent, active, inactive, text, n_top,
                                        n_sampled, n_held_random, left, right)
                for pos, latent in enumerate(latents)
                if needs_asking(done.get(str(latent)), redo_failed)}
    new: dict[int, dict[str, Any]] = {}

    def save(latent: int, rec: dict[str, Any]) -> None:
        rec["model"] = chat.name
        new[latent] = done[str(latent)] = rec
        atomic_write_json(out, done)
        say(progress(latent, rec))

    explain_all(chat, evidence, save, seed, concurrency, batch)
    check_explained(new, out)
    return done


def format_table(records: dict[str, dict[str, Any]], latents: list[int]) -> str:
    lines = [f"{'latent':>6}  {'score':>5}  {'status':<6}  title"]
    for i in latents:
        r = records.get(str(i))
        if r is None:
            continue
        score = "" if r.get("score") is None else f"{r['score']:.2f}"
        lines.append(f"{i:>6}  {score:>5}  {r.get('status', ''):<6}  "
                     f"{r.get('title') or r.get('error', '')}")
    scored = [r["score"] for i in latents if (r := records.get(str(i)))
              and r.get("score") is not None]
    if scored:
        lines.append(f"mean detection score (balanced accuracy) over {len(scored)} latents: "
                     f"{sum(scored) / len(scored):.3f}")
    return "\n".join(lines)
