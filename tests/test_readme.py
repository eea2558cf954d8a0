"""README.md: its generated reference sections match the code, and the commands it tells a
new user to run are the ones CI runs and the ones that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sae_lab.cli import build_parser
from sae_lab.docs import main as docs_main
from sae_lab.docs import render, stale_sections

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_generated_sections_are_current():
    stale = stale_sections(README)
    assert not stale, f"README sections {stale} are out of date: run `python -m sae_lab.docs`"


def test_check_mode_names_a_stale_section(tmp_path, capsys):
    from sae_lab.config import field_docs
    from sae_lab.training.config import TrainConfig

    doc = field_docs(TrainConfig)["lr"]
    stale = tmp_path / "README.md"
    stale.write_text(README.replace(doc, "an old description of lr", 1))
    assert docs_main(["--check", "--readme", str(stale)]) == 1
    assert "['config'] are out of date" in capsys.readouterr().err
    assert docs_main(["--readme", str(stale)]) == 0  # rewriting restores the section
    assert stale.read_text() == README


def test_reference_covers_every_command_and_config_field():
    from sae_lab.training.config import reference

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices
               and "train" in a.choices)
    for name, parser in sub.choices.items():
        assert f"#### `sae-lab {name}`" in README
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in README, (name, flag)
    for name, *_ in reference():
        assert f"| `{name}` |" in README, name


def test_missing_markers_are_an_error():
    with pytest.raises(ValueError, match="no generated section"):
        render("# a README without markers\n")


def test_quickstart_commands_are_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    install = 'pip install torch==2.13.0 && pip install -e ".[dev]"'
    assert f"{install} && python -m pytest -n 2\n" in README
    assert "pip install -e . && sae-lab demo" in README
    # CI: torch==2.13.0, then the package with [dev], then the README's test command
    steps = [ln.strip() for ln in ci.splitlines() if ln.strip().startswith("python -m")]
    assert any("pip install" in s and "torch==2.13.0" in s for s in steps)
    assert any("pip install" in s and '-e ".[dev]"' in s for s in steps)
    assert steps[-1] == "python -m pytest -n 2"


def test_every_sae_lab_command_in_the_readme_exists():
    known = set(next(a for a in build_parser()._actions
                     if hasattr(a, "choices") and a.choices and "train" in a.choices).choices)
    # commands as written in code: at a line start, after a backtick or after `&&`
    used = set(re.findall(r"(?:^\s*|`|&& )sae-lab ([a-z]+)\b", README, re.M))
    assert used and used <= known, used - known
