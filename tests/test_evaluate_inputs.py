"""`sae-lab eval` / `inspect` bad input: ranges and values checked up front, NaN/Inf rows."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers.tiny import make_sae

from sae_lab.cli import main
from sae_lab.data import shards
from sae_lab.data.shards import ShardSetWriter

HEADER = {"model": "m", "revision": None, "tokenizer": "t", "dataset": {"path": "d"},
          "layer": 0, "hook": "resid_post", "ctx_len": 16, "model_dtype": "float32",
          "special_tokens": "excluded"}


def small_set(tmp_path, nan_row: int | None = None, n: int = 3072):
    """Three shards of 1024 float32 rows, d_in=8; optionally one NaN row."""
    acts = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    if nan_row is not None:
        acts[nan_row, 3] = float("nan")
    w = ShardSetWriter(tmp_path / "acts", HEADER, "float32", 1024, 1024)
    w.add(0, acts, torch.zeros(n, dtype=torch.int32), torch.arange(n) // 16,
          (torch.arange(n) % 16).to(torch.int32))
    w.finish()
    sae = make_sae(d_in=8, d_sae=16, arch="relu")
    sae.metadata.update(model="m", layer=0, hook="resid_post")
    sae.save(tmp_path / "sae")
    return tmp_path / "acts", tmp_path / "sae"


def one_line_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"sae-lab {argv[0]}: error: ")
    assert not any("Traceback" in ln for ln in lines)
    return lines[-1]


def eval_json(argv, out) -> dict:
    main(argv + ["--out", str(out)])
    return json.loads((out / "eval.json").read_text())


def test_eval_ranges_are_checked_up_front(tmp_path, capsys):
    acts, sae = small_set(tmp_path)
    base = ["eval", str(sae), "--shards", str(acts), "--device", "cpu"]
    for flag, value in [("--last-shards", "-1"), ("--last-shards", "0"),
                        ("--max-tokens", "-5"), ("--max-tokens", "0"), ("--batch-size", "0")]:
        msg = one_line_error([*base, flag, value], capsys)
        assert flag in msg and value in msg, msg
    msg = one_line_error([*base, "--last-shards", "999"], capsys)
    assert "999" in msg and "3 shard" in msg
    # the valid ranges still give the right rows
    assert eval_json([*base, "--last-shards", "1"], tmp_path / "e1")["tokens"] == 1024
    assert eval_json([*base, "--max-tokens", "5"], tmp_path / "e2")["tokens"] == 5
    capsys.readouterr()


def test_nan_rows_are_an_error_naming_the_shard_or_skipped_and_counted(tmp_path, capsys,
                                                                      monkeypatch):
    # the writer refuses non-finite rows; let one through to get a damaged set
    monkeypatch.setattr(shards.RunningStats, "update", lambda self, acts: 0.0)
    acts, sae = small_set(tmp_path, nan_row=1500)
    monkeypatch.undo()
    base = ["eval", str(sae), "--shards", str(acts), "--device", "cpu"]
    msg = one_line_error(base, capsys)
    assert "shard-000001.tar" in msg and "NaN" in msg
    got = eval_json([*base, "--skip-nonfinite"], tmp_path / "e")
    assert got["nonfinite_rows"] == 1 and got["tokens"] == 3071
    assert all(v == v for v in got.values() if isinstance(v, float))  # no NaN metric


def test_inspect_values_are_checked_up_front(tmp_path, capsys):
    acts, sae = small_set(tmp_path)
    base = ["inspect", str(sae), "--shards", str(acts), "--out", str(tmp_path / "b")]
    for flag, value in [("--top", "0"), ("--top", "-3"), ("--context-left", "-3"),
                        ("--context-right", "-1"), ("--batch-size", "0"),
                        ("--max-tokens", "-5")]:
        msg = one_line_error([*base, flag, value], capsys)
        assert flag in msg and value in msg, msg
    assert not (tmp_path / "b").exists()


def test_browser_json_escapes_every_lt():
    from sae_lab.reading.browser import render_html

    html = render_html([{"id": 0, "contexts": [{"tokens": ["<!--<script>", "</script>"]}]}],
                       "summary <!--<script>")
    data = html.split('<script id="data" type="application/json">', 1)[1]
    payload = data.split("</script>", 1)[0]
    assert "<" not in payload
    assert json.loads(payload)["summary"] == "summary <!--<script>"
    assert json.loads(payload)["latents"][0]["contexts"][0]["tokens"][0] == "<!--<script>"


def test_inspect_and_export_refuse_a_foreign_out_before_any_work(tmp_path, capsys, monkeypatch):
    from sae_lab.lm import attach as lm

    acts, sae = small_set(tmp_path)
    foreign = tmp_path / "proj"
    (foreign / "src").mkdir(parents=True)
    (foreign / "src" / "thesis.tex").write_text("hi\n")

    def no_work(*a, **k):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(lm, "load_sae_dir", no_work)
    for cmd in (["inspect", str(sae), "--shards", str(acts)], ["export", str(sae)]):
        msg = one_line_error([*cmd, "--out", str(foreign)], capsys)
        assert "proj" in msg and "replaced" in msg
    assert (foreign / "src" / "thesis.tex").read_text() == "hi\n"


def test_inspect_shows_a_progress_bar_over_the_rows(capsys, monkeypatch):
    import sae_lab.progress
    from sae_lab.reading.browser import _counted

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    blocks = [{"acts": torch.zeros(n, 2)} for n in (1024, 1024, 500)]
    # captured stderr is no terminal: no bar (tests/test_progress.py), unless it were one
    assert list(_counted(iter(blocks), 2000, True)) == blocks  # unchanged, all passed on
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sae_lab.progress, "bar_wanted", lambda stream=None: True)
    assert list(_counted(iter(blocks), 2000, True)) == blocks
    err = capsys.readouterr().err
    assert "inspect" in err and "2.00k/2.00k" in err
    list(_counted(iter(blocks), 2000, False))
    assert capsys.readouterr().err == ""
