"""`sae-lab --help` and `sae-lab CMD --help`: fast (no torch import), complete, with defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sae_lab.cli import COMMANDS, build_parser


def modules_after(argv: list[str]) -> str:
    code = (f"import sys\nfrom sae_lab.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'transformers', "
            "'ray', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["harvest", "--help"], ["inspect", "--help"],
                                  ["eval", "--help"]])
def test_help_imports_no_heavy_library(argv):
    assert modules_after(argv) == "[]"


def test_listed_help_lines_are_the_commands_own():
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    own = {c.dest: c.help for c in sub._choices_actions}
    assert own == {name: text for name, text, _ in COMMANDS}
    lazy = next(a for a in build_parser(["eval"])._actions if hasattr(a, "choices")
                and a.choices)
    assert {c.dest: c.help for c in lazy._choices_actions} == own


@pytest.mark.parametrize("argv, shown", [
    (["harvest", "--help"], ["(default: 128)", "(default: resid_post)", "(default: 4096)"]),
    (["eval", "--help"], ["(default: 4096)", "(default: 64)"]),
    (["inspect", "--help"], ["(default: 10)", "(default: 12)", "(default: 1000)"]),
])
def test_help_shows_defaults(argv, shown, capsys):
    from sae_lab.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    text = " ".join(capsys.readouterr().out.split())
    for s in shown:
        assert s in text, s
    assert "(default: None)" not in text
