"""Progress bars on a terminal, none in a log: a bar's carriage-return redraws in a file are one
unreadable line."""

import io
import sys

from sae_lab.cli import main
from sae_lab.progress import bar_wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_none_in_a_file(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert bar_wanted(Terminal())
    assert not bar_wanted(io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # a notebook kernel renders its own bar
    assert bar_wanted(io.StringIO())


def test_harvest_into_a_log_writes_no_carriage_returns(tmp_path, capsys, monkeypatch, corpus,
                                                       tiny_lm):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    main(["harvest", "--model", str(tiny_lm), "--dataset", str(corpus), "--out",
          str(tmp_path / "acts"), "--max-tokens", "4096", "--shard-rows", "4096"])
    err = capsys.readouterr().err
    assert "\r" not in err
    assert list((tmp_path / "acts").glob("layer_*/manifest.json"))  # it did harvest
