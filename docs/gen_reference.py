"""The reference pages of the docs site, generated from the code so they cannot drift from it.

    mkdocs build                         this file is an MkDocs hook (`hooks:` in mkdocs.yml): the
                                         pages reference/cli.md and reference/config.md are made
                                         from the code at every build and never stored
    python docs/gen_reference.py OUT     write the same pages into the folder OUT, to read them
                                         without MkDocs

    reference/cli.md     every `sae-lab` command with each option's default and help, from the
                         parser builder `sae_lab.cli.build_parser()` (what `--help` prints)
    reference/config.md  every training-config field: dotted name, type (with its bounds),
                         default, docstring (`sae_lab.training.config.reference()`), then each
                         architecture's own SAE fields, then the sweep YAML's fields
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    # default column, and the page must not depend on the Python version.
    text = (action.help or "").removesuffix(" (default: %(default)s)")
    if "%" in text:
        params = {**vars(action), "prog": prog}
        if params.get("choices") is not None:
            params["choices"] = ", ".join(map(str, params["choices"]))
        text = text % params
    return _cell(text)


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every `sae-lab` command's parser, in the order `sae-lab --help` lists them."""
    from sae_lab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def cli_reference() -> str:
    """One table per `sae-lab` command."""
    from sae_lab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    parts = [
        "# CLI reference\n",
        "Generated from the argument parsers at every docs build, so it is what "
        "`sae-lab COMMAND --help` prints. Options that come before the command: "
        "`sae-lab --debug COMMAND ...` prints full tracebacks instead of one-line errors, "
        "`sae-lab --version` prints the version.\n",
    ]
    for name, p in sub.choices.items():
        parts.append(f"## `sae-lab {name}`\n")
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
        if default is False:
            shown = "`False`"
        tp = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", tp)  # sae_lab.training.config.X -> X
        lines.append(f"| `{name}` | {_cell(tp)} | {shown} | {_cell(doc)} |")
    return "\n".join(lines)


def config_reference() -> str:
    from sae_lab.config import reference as section_reference
    from sae_lab.sae.registry import ARCHITECTURES
    from sae_lab.sweep.schema import SweepConfig
    from sae_lab.training.config import TrainConfig, reference

    parts = [
        "# Config reference\n",
        "Generated from the config classes' field docstrings at every docs build. Every config "
        "is checked when it is read: a wrong type (`batch_size: 512.5`), a value out of range or "
        "an unknown key stops with one line naming the dotted field (`sae-lab train: error: "
        "data.synthetic.d=0: must be >= 1`). Numbers such as `1e-3` are numbers, in YAML and in "
        "`--set`. `sae-lab schema --out schemas/` writes the same fields as JSON Schema for "
        "editors (see [Training](../training.md#editor-completion)).\n",
        "## Training config\n",
        "`sae-lab train CONFIG.yaml`, `sae_lab.TrainConfig`, the `base:` of a sweep. Nested "
        "fields are YAML sections (`sae: {k: 64}`) or dotted `--set` keys (`--set sae.k=64`). "
        "The `sae.*` rows merge every architecture's fields; a field that only some "
        "architectures have names them first.\n",
        _table(reference(TrainConfig)),
        "",
        "## SAE fields per architecture\n",
        "The `sae:` section of each architecture (`sae.architecture` picks one), with that "
        "architecture's defaults.\n",
    ]
    for name, cls in ARCHITECTURES.items():
        rows = [r for r in section_reference(cls.config_cls, "sae.") if r[0] != "sae.architecture"]
        parts += [f"### `{name}`\n", f"`{cls.config_cls.__name__}`\n", _table(rows), ""]
    parts += [
        "## Sweep YAML\n",
        "`sae-lab sweep SWEEP.yaml`. `space.<architecture>.<field>` is a constant or one of "
        "`{loguniform: [lo, hi]}`, `{uniform: [lo, hi]}`, `{choice: [...]}`, `{grid: [...]}`; "
        "`space.all` applies to every architecture; SAE fields drop their `sae.` prefix (`k`, "
        "`sparsity_coef`, `expansion_factor`). See [Sweeps](../sweeps.md).\n",
        _table(reference(SweepConfig)),
        "",
    ]
    return "\n".join(parts)


PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_reference,
    "reference/config.md": config_reference,
}


# --- MkDocs hook ---------------------------------------------------------------------------------


def on_files(files, config):  # noqa: ANN001  (mkdocs' Files and MkDocsConfig)
    """Add the generated pages to the site (MkDocs >= 1.6: File.generated)."""
    from mkdocs.structure.files import File

    for path, make in PAGES.items():
        files.append(File.generated(config, path, content=make()))
    return files


def write(out: Path) -> list[Path]:
    written = []
    for path, make in PAGES.items():
        dest = out / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(make(), encoding="utf-8")
        written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/gen_reference.py",
                                description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder to write reference/cli.md and reference/config.md into")
    args = p.parse_args(argv)
    for dest in write(Path(args.out)):
        print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
