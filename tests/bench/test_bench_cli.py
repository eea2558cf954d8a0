"""`sae-lab bench` end to end: a sweep output and an SAE directory on the tiny GPT-2 (CE/KL,
probes, absorption, the table and the plots), and a MiniLM SAE, whose model has no LM head: one
line for CE, one for a labelled set with one class, and the other tasks still run."""

from __future__ import annotations

import json

import pytest
from helpers.cli import run_cli
from helpers.tiny import CTX, HOOK, LAYER, make_sae

from sae_lab.evaluate import evaluate_sae, shard_activations
from sae_lab.sae.base import load

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def gpt2_saes(tiny_lm, tmp_path_factory):
    """A sweep output holding a TopK SAE in best/, and a ReLU SAE directory."""
    base = tmp_path_factory.mktemp("bench-saes")
    sweep_best = base / "sweep" / "best"
    paths = {"topk": sweep_best / "topk", "relu": base / "relu"}
    for seed, (arch, path) in enumerate(paths.items()):
        sae = make_sae(64, 128, arch, seed)
        sae.metadata.update(model=str(tiny_lm), layer=LAYER, hook=HOOK, ctx_len=CTX)
        sae.save(path)
    (sweep_best / "summary.json").write_text(json.dumps({"topk": {"trial": "topk_0"}}))
    return base / "sweep", paths["relu"]


def test_bench_on_tiny_gpt2(gpt2_saes, tiny_shards, tmp_path, capsys):
    sweep, relu = gpt2_saes
    out = tmp_path / "bench"
    code, stdout, err = run_cli(
        ["bench", str(sweep), str(relu), "--shards", str(tiny_shards), "--out", str(out),
         "--tasks", "core,sparse_probing,absorption,autointerp", "--probe-set", "prose_or_code",
         "--probe-texts", "10", "--k", "1,2", "--max-tokens", "1500", "--n-seqs", "2",
         "--absorption-min-tokens", "2"], capsys)
    assert code == 0, err
    data = json.loads((out / "bench.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    assert list(rows) == [f"{sweep}:topk", str(relu)]
    assert [r["architecture"] for r in rows.values()] == ["topk", "relu"]
    for r in rows.values():
        m = r["metrics"]
        for key in ("fvu", "cos", "l0", "unfired_frac", "dense_frac", "ce_score", "kl_score",
                    "probe_sae_top1", "probe_sae_top2", "probe_llm_top1", "probe_llm_all"):
            assert key in m, key
        assert 0 <= m["probe_sae_top1"] <= 1 and m["kl_sae"] >= 0
    # core's whole-set numbers are evaluate's on the same rows
    topk = load(sweep / "best" / "topk")
    ref = evaluate_sae(topk, shard_activations(tiny_shards, max_tokens=1500)).metrics
    assert rows[f"{sweep}:topk"]["metrics"]["fvu"] == pytest.approx(ref["fvu"], rel=1e-5)
    assert rows[f"{sweep}:topk"]["metrics"]["l0"] == pytest.approx(ref["l0"], rel=1e-5)
    # absorption scored some letters, or said in one line why not
    absorbed = [r for r in rows.values() if "absorption_full" in r["metrics"]]
    assert absorbed or any(n.startswith("absorption: ") for n in data["notes"])
    assert "autointerp: autointerp needs an endpoint (--endpoint)" in data["notes"]
    assert "autointerp: autointerp needs an endpoint (--endpoint)" in err
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "density.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "bench.md").read_text()
    assert md.startswith("| sae | architecture | d_sae | fvu |") and str(relu) in md
    assert stdout.startswith("| sae | architecture |") and "saved: " in stdout


def test_bench_on_minilm_without_lm_head(minilm_shards, tmp_path, capsys):
    sae = make_sae(384, 64, "relu")
    sae.metadata.update(model=MINILM, layer=3, hook="resid_post")
    sae.save(tmp_path / "sae")
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"text": f"text {i}", "label": "a"}) + "\n"
                           for i in range(5)))
    out = tmp_path / "bench"
    code, _, err = run_cli(
        ["bench", str(tmp_path / "sae"), "--shards", str(minilm_shards), "--out", str(out),
         "--tasks", "core,sparse_probing", "--probe-set", str(one), "--probe-set",
         "prose_or_code", "--probe-texts", "8", "--k", "1"], capsys)
    assert code == 0, err
    data = json.loads((out / "bench.json").read_text())
    m = data["rows"][0]["metrics"]
    assert "fvu" in m and "probe_sae_top1" in m and "ce_score" not in m
    assert data["notes"] == [
        f"core: CE/KL skipped: model {MINILM} has no LM head (not a causal LM)",
        f"sparse_probing: labelled set {one} has one class ('a'); sparse probing needs two or "
        "more labels",
    ]
    assert all(n in err for n in data["notes"])


def test_bench_bad_task_is_a_usage_error(tmp_path, capsys):
    code, _, err = run_cli(["bench", str(tmp_path), "--out", str(tmp_path / "o"), "--tasks",
                            "core,absorb"], capsys)
    assert code == 2 and "unknown task(s) absorb; choose from core, sparse_probing" in err


def test_autointerp_scores_a_sample_through_an_endpoint_and_caches_it(gpt2_saes, tiny_shards,
                                                                      tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from sae_lab.bench.autointerp import detection_score

    asked = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # one answer that both the explain and the detect prompts accept
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            asked.append(1)
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content":
                              "TITLE: t\nEXPLANATION: e\nANSWER: [1]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/v1"
        _, relu = gpt2_saes
        out = tmp_path / "autointerp.json"
        metrics, details = detection_score(str(relu), str(tiny_shards), url, "m", 3, 128, out)
        assert details["scored"] == 3 and len(details["latents"]) == 3
        assert 0 <= metrics["autointerp"] <= 1 and out.is_file()
        n = len(asked)
        assert n >= 6  # an explanation and a detection per latent
        again, _ = detection_score(str(relu), str(tiny_shards), url, "m", 3, 128, out)
        assert again == metrics and len(asked) == n  # cached: nothing asked again
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_autointerp_against_an_endpoint_that_is_down_is_one_note(gpt2_saes, tiny_shards,
                                                                 tmp_path):
    """A closed port: autointerp fails at its first request (llm_retries=0, no backoff) and says
    so in one line; core still scores the SAE."""
    import socket

    from sae_lab.bench.run import BenchConfig, BenchSAE, run_bench

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, relu = gpt2_saes
    cfg = BenchConfig(tasks=["autointerp", "core"], shards=str(tiny_shards), max_tokens=500,
                      n_seqs=2, endpoint=f"http://127.0.0.1:{port}/v1", llm="m",
                      autointerp_latents=3, llm_retries=0)
    said: list[str] = []
    result = run_bench([BenchSAE("relu", str(relu))], cfg, tmp_path, say=said.append)
    [note] = result.notes
    assert note.startswith("autointerp: ") and f"127.0.0.1:{port}" in note, note
    assert "after 1 try" in note and "\n" not in note
    assert {"fvu", "l0", "ce_score"} <= set(result.rows[0].metrics)
    assert "autointerp" not in result.rows[0].metrics
    assert said[0] == note
