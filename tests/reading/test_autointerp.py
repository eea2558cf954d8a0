"""autointerp against a fake OpenAI-compatible server (helpers.chat_server): requests really in
flight together, several latents per prompt scoring as one per prompt, a cache that makes a rerun
silent, a run cut by a failing server resumed with only what is missing, a server that is down.

Data: helpers.explain_data, one-token contexts where latent j fires exactly on word wJJ, so the
fake's rule gives a known, latent-dependent score (see helpers.chat_server).
"""

from __future__ import annotations

import json
import socket

import pytest
import torch
from helpers.chat_server import FakeChatServer
from helpers.explain_data import Words, one_hot_blocks, token_sae

from sae_lab.reading.autointerp import autointerp, choose_latents
from sae_lab.reading.explain import EndpointError, HTTPChat

LATENTS = [0, 1, 2, 3, 5, 7, 8, 10]


def run(server_url: str, **kw):
    chat = HTTPChat(server_url, "rule", timeout=10.0, retries=0)
    args = {"latents": LATENTS, "top": 8, "sampled": 4, "held_out": 10, "concurrency": 1,
            "probe": False} | kw
    return autointerp(token_sae(), args.pop("blocks", one_hot_blocks), Words(), chat, **args)


def test_requests_are_in_flight_together_up_to_the_concurrency():
    """The server holds the first 4 requests until all 4 have arrived: a client that sends them
    one after another fails here (HTTP 503 after the barrier's timeout), whatever the timing."""
    with FakeChatServer(gate=4) as server:
        res = run(server.url, concurrency=4)
    assert server.max_in_flight == 4  # reached, never passed
    assert server.requests == 2 * len(LATENTS)  # explain + detect each, none failed
    assert res["n_scored"] == len(LATENTS) and res["n_failed"] == 0


def test_several_latents_per_prompt_score_as_one_per_prompt():
    with FakeChatServer() as server:
        single = run(server.url)
    assert server.requests == 2 * len(LATENTS)
    with FakeChatServer(drop=frozenset({3})) as server:  # latent 3 missing from JSON answers
        batched = run(server.url, batch=4, concurrency=2)
    # Per group of 4: one explain and one detect prompt; latent 3 asked alone (2 more).
    assert server.requests == 2 + 2 + 2
    assert sorted(server.explained) == sorted(f"w{i:02d}" for i in LATENTS)
    assert batched["scores"] == single["scores"]
    assert len(set(single["scores"].values())) > 1  # the rule's misses make scores differ
    assert all(0.5 < s <= 1 for s in single["scores"].values())
    assert batched["mean"] == pytest.approx(sum(single["scores"].values()) / len(LATENTS))
    for latent in LATENTS:
        assert batched["records"][latent]["title"] == f"the word w{latent:02d}"


def test_the_cache_makes_a_rerun_send_nothing(tmp_path):
    with FakeChatServer() as server:
        first = run(server.url, cache_dir=tmp_path, concurrency=3)
        n = server.requests
        passes = []
        again = run(server.url, cache_dir=tmp_path, concurrency=3,
                    blocks=lambda: passes.append(1) or one_hot_blocks())
        assert server.requests == n and passes == []  # not one request, nor a pass over data
        other = run(server.url, cache_dir=tmp_path, top=6)  # another setting: another key
        assert server.requests == 2 * n
    assert again["scores"] == first["scores"] and again["n_cached"] == len(LATENTS)
    assert again["n_asked"] == 0 and first["n_asked"] == len(LATENTS)
    assert other["cache"] != first["cache"]
    files = sorted(p.name for p in (tmp_path / first["cache"].split("/")[-1]).iterdir())
    assert files == sorted([f"{i}.json" for i in LATENTS] + ["settings.json"])


def test_a_run_cut_short_resumes_with_only_the_missing_latents(tmp_path):
    with FakeChatServer() as server:
        whole = run(server.url)
    # One request at a time: answers 1-4 finish latents 0 and 1, the 5th is latent 2's
    # explanation, then the server fails: latent 2 is lost with its detection request.
    with FakeChatServer(fail_after=5) as server, \
            pytest.raises(EndpointError, match=r"HTTP 500 .*; 2 of 8 latents done, kept in "
                          r".*: a rerun asks only for the rest$") as e:
        run(server.url, cache_dir=tmp_path)
    assert "\n" not in str(e.value)
    key = next(p for p in tmp_path.iterdir())
    assert sorted(p.name for p in key.glob("[0-9]*.json")) == ["0.json", "1.json"]
    with FakeChatServer() as server:
        resumed = run(server.url, cache_dir=tmp_path, concurrency=4)
    assert sorted(server.explained) == sorted(f"w{i:02d}" for i in LATENTS[2:])
    assert server.requests == 2 * (len(LATENTS) - 2)
    assert resumed["n_cached"] == 2 and resumed["scores"] == whole["scores"]


def test_an_endpoint_down_is_one_line_and_nothing_is_kept(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for probe in (False, True):  # found by the latents' requests, or before the passes
        passes = []
        with pytest.raises(EndpointError) as e:
            run(f"http://127.0.0.1:{port}/v1", cache_dir=tmp_path, concurrency=4, probe=probe,
                blocks=lambda passes=passes: passes.append(1) or one_hot_blocks())
        msg = str(e.value)
        assert "\n" not in msg and "unreachable" in msg and "0 of 8 latents done" in msg
        assert len(passes) == (0 if probe else 2)
    assert [p.name for p in next(tmp_path.iterdir()).iterdir()] == ["settings.json"]


def test_the_sample_is_seeded_live_and_extends():
    fires = torch.tensor([0, 3, 0, 5, 1, 0, 2, 9, 4, 0, 7, 1])
    live = set(fires.nonzero().flatten().tolist())
    five = choose_latents(fires, 5, seed=0)
    assert len(five) == 5 and set(five) <= live
    assert choose_latents(fires, 7, seed=0)[:5] == five  # a larger sample extends it
    assert sorted(choose_latents(fires, 100, seed=0)) == sorted(live)
    assert choose_latents(fires, 5, seed=1) != five
    with FakeChatServer() as server:
        res = run(server.url, latents=None, sample=3, seed=0)
    assert res["latents"] == choose_latents(torch.ones(12), 3, seed=0)
    assert res["n_latents"] == res["n_scored"] == 3
    assert json.loads(json.dumps(res))  # the summary is JSON as it is


def test_a_batched_answer_in_fences_or_garbled_is_read_or_asked_again_alone():
    """Keys like "Feature 0" inside ```json fences are read; a detection answer that is not JSON
    sends each latent's detection alone, in the one-latent format."""
    from helpers.chat_server import rule_answer

    from sae_lab.reading.explain import Evidence, explain_group

    asked = []

    def chat(messages):
        prompt = messages[-1]["content"]
        asked.append("JSON object" in prompt)
        answer, _ = rule_answer(prompt)
        if "JSON object" in prompt and "is explained as" not in prompt:
            obj = {f"Feature {k}": v for k, v in json.loads(answer).items()}
            return f"Sure!\n```json\n{json.dumps(obj)}\n```"
        return "I cannot answer in JSON." if "JSON object" in prompt else answer

    def ev(w):
        return Evidence([f"<<{w}>>"] * 3, [w] * 4, ["w99"] * 4)

    recs = explain_group(chat, [(0, ev("w00")), (1, ev("w01"))], seed=0)
    assert asked == [True, True, False, False]  # explain together, detect together, then alone
    assert [r["title"] for r in recs.values()] == ["the word w00", "the word w01"]
    assert all(r["status"] == "ok" and r["score"] is not None for r in recs.values())
