"""README.md and the docs pages under docs/: their Markdown is well formed (read with a
CommonMark parser), their links lead somewhere, the commands they tell a new user to run are the
ones CI runs and the ones that exist, and the generated reference pages cover the code."""

from __future__ import annotations

import ast
import doctest
import importlib.util
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
GENERATED = {"reference/cli.md", "reference/config.md"}  # made by docs/gen_reference.py
DEMO_LINE = "pip install torch==2.13.0 && pip install -e . && sae-lab demo"


def ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


@cache
def tokens(path: Path):
    return MarkdownIt("commonmark").enable("table").parse(path.read_text(encoding="utf-8"))


def fences(path: Path):
    return [t for t in tokens(path) if t.type == "fence"]


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, text) of every heading, as the parser sees them (none inside a code block)."""
    toks = tokens(path)
    return [(int(t.tag[1]), toks[i + 1].content) for i, t in enumerate(toks)
            if t.type == "heading_open"]


def links(path: Path) -> list[str]:
    out = []
    for t in tokens(path):
        for child in t.children or []:
            if child.type == "link_open":
                out.append(child.attrGet("href"))
    return out


@cache
def gen_reference():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ci_test_command() -> str:
    steps = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()
             if ln.strip().startswith("python -m")]
    return steps[-1]


# --- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES, ids=ids(PAGES))
def test_every_code_fence_is_closed(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    for f in fences(path):
        start, end = f.map
        closing = lines[end - 1].strip() if end - 1 > start else ""
        assert closing and set(closing) == {f.markup[0]} and len(closing) >= len(f.markup), (
            f"{path.name}:{start + 1}: the {f.markup}{f.info} fence is never closed "
            f"(it swallows everything to line {end})")
        # An opener inside a block (```bash after an unclosed ```text) means the block before
        # it was never closed: the parser closes it at the next bare ``` instead, and whatever
        # lies between (headings, prose) renders as code.
        nested = [ln for ln in f.content.splitlines() if ln.lstrip().startswith(f.markup)]
        assert not nested, (f"{path.name}:{start + 1}: the {f.markup}{f.info} block holds "
                            f"{nested[0]!r}: the block is not closed where it should be")


@pytest.mark.parametrize("path", PAGES, ids=ids(PAGES))
def test_one_title_then_sections(path):
    levels = [level for level, _ in headings(path)]
    assert levels[:1] == [1] and levels.count(1) == 1, f"{path.name}: one # title, first"


def test_readme_is_short_and_has_its_sections():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 220
    sections = [text for level, text in headings(README) if level == 2]
    for want in ("Quickstart", "From Python", "Architectures", "Commands", "Troubleshooting",
                 "Documentation"):
        assert want in sections, (want, sections)


def test_readme_lists_the_six_architectures_with_papers():
    from sae_lab.sae.registry import ARCHITECTURES

    text = README.read_text(encoding="utf-8")
    for name in ARCHITECTURES:
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")), None)
        assert row and re.search(r"\b20\d\d\b", row), f"README: no table row citing {name}'s paper"


@pytest.mark.parametrize("path", PAGES, ids=ids(PAGES))
def test_relative_links_resolve(path):
    for href in links(path):
        if re.match(r"[a-z]+:", href) or href.startswith("#"):
            if href.startswith("#"):
                assert slugify(href[1:], "-") in anchors(path) or href[1:] in anchors(path), href
            continue
        target, _, anchor = href.partition("#")
        dest = (path.parent / target).resolve()
        rel = dest.relative_to(DOCS).as_posix() if dest.is_relative_to(DOCS) else None
        if rel in GENERATED:
            continue
        assert dest.exists(), f"{path.name}: link {href!r} leads nowhere"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{path.name}: {href!r}: no such heading"


@cache
def anchors(path: Path) -> set[str]:
    # MkDocs' ids: Python-Markdown's toc slugify of the heading's text (code spans unquoted)
    return {slugify(text.replace("`", ""), "-") for _, text in headings(path)}


def test_mkdocs_nav_lists_every_page():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)

    nav = set(walk(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav == on_disk | GENERATED, (nav ^ (on_disk | GENERATED))
    assert config["hooks"] == ["docs/gen_reference.py"]


# --- commands --------------------------------------------------------------------------------


def quickstart_block(path: Path) -> list[str]:
    """The lines of the first bash block after the page's quickstart heading."""
    toks = tokens(path)
    at = next(i for i, t in enumerate(toks) if t.type == "heading_open"
              and toks[i + 1].content in ("Quickstart", "Install and run the demo"))
    block = next(t for t in toks[at:] if t.type == "fence")
    assert block.info == "bash"
    return [ln for ln in block.content.splitlines() if ln and not ln.startswith("#")]


@pytest.mark.parametrize("path", [README, DOCS / "getting-started.md"],
                         ids=["README.md", "docs/getting-started.md"])
def test_quickstart_commands_are_what_ci_runs(path):
    test_line = f'pip install torch==2.13.0 && pip install -e ".[dev]" && {ci_test_command()}'
    assert quickstart_block(path) == [DEMO_LINE, test_line]
    assert ci_test_command() == "python -m pytest -n 2"


def test_the_demo_time_shown_is_what_a_first_run_takes():
    """The demo's closing line in the docs must not be a re-run's (which reuses the harvest and
    sweep): at least the first-run wall time in the benchmarks, and the pages say so."""
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    m, s = re.search(r"done in (\d+)m(\d+)s", page).groups()
    bench = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    first = re.search(r"`sae-lab demo` wall time.*?packed (\d+) s", bench).group(1)
    assert int(m) * 60 + int(s) >= int(first)
    for path in (README, DOCS / "getting-started.md"):
        assert "first run takes a few minutes on 2 CPU cores" in \
            " ".join(path.read_text(encoding="utf-8").split()), path.name


def test_ci_installs_what_the_quickstart_installs_and_builds_the_docs():
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    install = next(i for i, ln in enumerate(ci) if "pip install" in ln and '-e ".[dev]"' in ln)
    assert any("pip install" in ln and "torch==2.13.0" in ln for ln in ci[:install])
    docs = next(i for i, ln in enumerate(ci) if ln.startswith("mkdocs build --strict"))
    tests = ci.index(ci_test_command())
    assert install < docs < tests


def commands_used(text: str) -> set[str]:
    # commands as written in code: at a line start, after a backtick or after `&&`
    return set(re.findall(r"(?:^\s*(?:\$ )?|`|&& )sae-lab ([a-z]+)\b", text, re.M))


def test_every_sae_lab_command_in_the_docs_exists():
    known = set(gen_reference().commands())
    for path in PAGES:
        used = commands_used(path.read_text(encoding="utf-8"))
        assert used <= known, (path.name, used - known)
    assert commands_used(README.read_text(encoding="utf-8")) == known  # the commands table


def test_python_blocks_parse():
    parser = doctest.DocTestParser()
    for path in PAGES:
        for f in fences(path):
            if f.info != "python":
                continue
            if ">>>" in f.content:
                sources = [ex.source for ex in parser.get_examples(f.content)]
            else:
                sources = [f.content]
            for source in sources:
                try:
                    ast.parse(source)
                except SyntaxError as e:
                    pytest.fail(f"{path.name}:{f.map[0] + 1}: python block: {e}")


def test_bash_blocks_split_into_words():
    for path in PAGES:
        for f in fences(path):
            if f.info == "bash" and "<<" not in f.content:
                shlex.split(f.content.replace("\\\n", " "), comments=True)


# --- generated reference -----------------------------------------------------------------------


def test_cli_reference_covers_every_command_and_option():
    gen = gen_reference()
    page = gen.cli_reference()
    for name, parser in gen.commands().items():
        assert f"## `sae-lab {name}`" in page
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page, (name, flag)


def test_config_reference_covers_every_field():
    from sae_lab.sae.registry import ARCHITECTURES
    from sae_lab.sweep.schema import SweepConfig
    from sae_lab.training.config import reference

    page = gen_reference().config_reference()
    for name, *_ in [*reference(), *reference(SweepConfig)]:
        assert f"| `{name}` |" in page, name
    for arch in ARCHITECTURES:
        assert f"### `{arch}`" in page


def test_generator_writes_the_pages(tmp_path, capsys):
    assert gen_reference().main([str(tmp_path)]) == 0
    for rel in GENERATED:
        text = (tmp_path / rel).read_text()
        assert text.startswith("# ") and "|---|" in text
    assert not list(REPO.glob("sae_lab/docs.py"))  # the generator lives outside the package
