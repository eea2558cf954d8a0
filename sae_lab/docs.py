"""Generate the README's reference sections from the code, so they cannot drift from it.

    python -m sae_lab.docs            rewrite the generated sections of README.md in place
    python -m sae_lab.docs --check    exit 1, naming the stale sections, if README.md is out of date

A generated section sits between `<!-- BEGIN GENERATED: NAME -->` and
`<!-- END GENERATED: NAME -->`:

    cli     every `sae-lab` command with each option's default and help (from argparse)
    config  every training-config field: dotted name, type (with its bounds), default, docstring
            (TrainConfig and its sections), then the sweep YAML's fields (SweepConfig); rows
            come from sae_lab.config.reference
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sae_lab.cli import build_parser
from sae_lab.files import atomic_write_text

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (\w+) -->\n)(.*?)(<!-- END GENERATED: \2 -->)",
                    re.S)


def _cell(text: Any) -> str:
    """Markdown-table-safe text: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: Any) -> str:
    return f"`{_cell(value)}`" if value not in ("", None) else ""


def _default(value: Any) -> str:
    if value is None or value is argparse.SUPPRESS or value is False or value == []:
        return ""
    if isinstance(value, str):
        return _code(value)
    if isinstance(value, (list, tuple)):
        return _code(", ".join(map(str, value)))
    return _code(repr(value))


# --- cli ---------------------------------------------------------------------------------------


def _option(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    takes_value = action.nargs != 0
    name = max(action.option_strings, key=len)
    if not takes_value:
        return f"`{name}`"
    if action.choices:
        meta = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        meta = action.metavar or action.dest.upper()
    if action.nargs in ("+", "*"):
        meta += " ..."
    return f"`{name} {meta}`"


def _help(action: argparse.Action, prog: str) -> str:
    # Python < 3.14 appends " (default: ...)" to BooleanOptionalAction help; the table has a
    # default column, and the README must not depend on the Python version.
    text = (action.help or "").removesuffix(" (default: %(default)s)")
    if "%" in text:
        params = {**vars(action), "prog": prog}
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return _cell(text)


def cli_reference() -> str:
    """One table per `sae-lab` command, in the order `sae-lab --help` lists them."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    parts = []
    for name, p in sub.choices.items():
        parts.append(f"#### `sae-lab {name}`\n")
        parts.append(_cell(p.description or helps.get(name, "")) + "\n")
        parts.append("| argument | default | what it does |\n|---|---|---|")
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            default = "" if action.required or not action.option_strings else action.default
            if isinstance(action, argparse.BooleanOptionalAction):
                default = action.default
                label = f"`{action.option_strings[0]}` / `{action.option_strings[1]}`"
            else:
                label = _option(action)
            required = " (required)" if action.required and action.option_strings else ""
            parts.append(f"| {label}{required} | {_default(default)} | {_help(action, p.prog)} |")
        parts.append("")
    return "\n".join(parts)


# --- config ------------------------------------------------------------------------------------


def _table(rows: list[tuple[str, str, Any, str]]) -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, tp, default, doc in rows:
        shown = _default(default) if default not in ({}, "{...}") else ""
        tp = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", tp)  # sae_lab.training.config.X -> X
        lines.append(f"| `{name}` | {_cell(tp)} | {shown} | {_cell(doc)} |")
    return "\n".join(lines)


def config_reference() -> str:
    from sae_lab.sweep.schema import SweepConfig
    from sae_lab.training.config import TrainConfig, reference

    return "\n".join([
        "**Training config** (`sae-lab train CONFIG.yaml`, `sae_lab.TrainConfig`, the `base:` of "
        "a sweep). Nested fields are YAML sections (`sae: {k: 64}`) or dotted `--set` keys "
        "(`--set sae.k=64`).",
        "",
        _table(reference(TrainConfig)),
        "",
        "**Sweep YAML** (`sae-lab sweep SWEEP.yaml`). `space.<architecture>.<field>` is a "
        "constant or one of `{loguniform: [lo, hi]}`, `{uniform: [lo, hi]}`, `{choice: [...]}`, "
        "`{grid: [...]}`; `space.all` applies to every architecture; SAE fields drop their "
        "`sae.` prefix (`k`, `sparsity_coef`, `expansion_factor`).",
        "",
        _table(reference(SweepConfig)),
        "",
    ])


GENERATORS: dict[str, Callable[[], str]] = {"cli": cli_reference, "config": config_reference}


# --- README ------------------------------------------------------------------------------------


def render(text: str) -> str:
    """`text` with every generated section replaced by what the code gives now."""
    found = {m.group(2) for m in _BLOCK.finditer(text)}
    missing = sorted(set(GENERATORS) - found)
    if missing:
        raise ValueError(f"README has no generated section(s) {missing}; add "
                         f"'<!-- BEGIN GENERATED: {missing[0]} -->' and its END marker")

    def fill(m: re.Match) -> str:
        name = m.group(2)
        if name not in GENERATORS:
            raise ValueError(f"README: unknown generated section {name!r}; "
                             f"known: {sorted(GENERATORS)}")
        return f"{m.group(1)}{GENERATORS[name]().rstrip()}\n{m.group(4)}"

    return _BLOCK.sub(fill, text)


def stale_sections(text: str) -> list[str]:
    """Names of the generated sections of `text` that differ from what the code gives now."""
    new = {m.group(2): m.group(3) for m in _BLOCK.finditer(render(text))}
    old = {m.group(2): m.group(3) for m in _BLOCK.finditer(text)}
    return sorted(name for name in new if new[name] != old.get(name))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sae_lab.docs", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only report whether README is current")
    p.add_argument("--readme", default=str(README), help="README to update (default: the repo's)")
    args = p.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    if args.check:
        stale = stale_sections(text)
        if stale:
            print(f"{path}: generated section(s) {stale} are out of date; run "
                  "`python -m sae_lab.docs`", file=sys.stderr)
            return 1
        print(f"{path}: up to date")
        return 0
    new = render(text)
    if new != text:
        atomic_write_text(path, new)
        print(f"{path}: updated")
    else:
        print(f"{path}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
