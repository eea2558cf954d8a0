"""Labelled text sets for sparse probing: {text, label} records with two or more labels.

    stdlib_topics      which standard-library package a docstring comes from (asyncio, email,
                       logging, xml): 4 classes, built offline from this Python's sources
    prose_or_code      a docstring paragraph or a line of Python source: 2 classes, offline
    FILE.jsonl         one {"text": ..., "label": ...} a line
    anything else      datasets.load_dataset(NAME, split=...) with `text` and `label` columns:
                       a Hub dataset id, or a local folder of data files
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

TOPIC_PACKAGES = ("asyncio", "email", "logging", "xml")
MAX_CHARS = 400
"""Texts are cut to this many characters: probing reads the first tokens only."""


class TextSet(NamedTuple):
    name: str
    texts: list[str]
    labels: list[str]
    """One per text, as strings (a jsonl's 0/1 labels become "0"/"1")."""

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))


def _docstrings(files: list[Path], enough: int | None = None) -> list[str]:
    """Docstrings of >= 80 characters, whitespace collapsed, cut to MAX_CHARS; the files are
    read in order until `enough` are found."""
    docs: list[str] = []
    for path in files:
        if enough is not None and len(docs) >= enough:
            break
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            doc = ast.get_docstring(node) if isinstance(node, kinds) else None
            if doc and len(doc) >= 80:
                docs.append(" ".join(doc.split())[:MAX_CHARS])
    return docs


def _package_files(package: str) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"]) / package
    return sorted(p for p in root.rglob("*.py") if "test" not in p.relative_to(root).parts[:-1])


def stdlib_topics(per_class: int, seed: int = 0) -> TextSet:
    texts, labels = [], []
    for package in TOPIC_PACKAGES:
        docs = _docstrings(_package_files(package), enough=3 * per_class)
        random.Random(seed).shuffle(docs)
        texts += docs[:per_class]
        labels += [package] * len(docs[:per_class])
    return TextSet("stdlib_topics", texts, labels)


def prose_or_code(per_class: int, seed: int = 0) -> TextSet:
    files = _package_files("email")
    prose = _docstrings(files, enough=3 * per_class)
    code: list[str] = []
    for path in files:
        if len(code) >= 3 * per_class:
            break
        code += _code_lines(path.read_text(encoding="utf-8", errors="replace"))
    rng = random.Random(seed)
    rng.shuffle(prose)
    rng.shuffle(code)
    prose, code = prose[:per_class], code[:per_class]
    return TextSet("prose_or_code", prose + code, ["prose"] * len(prose) + ["code"] * len(code))


def _code_lines(source: str) -> list[str]:
    """Lines of Python source longer than 40 characters, outside strings and comments."""
    in_string: set[int] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.end_lineno:
            in_string.update(range(node.lineno, node.end_lineno + 1))
    return [line.strip()[:MAX_CHARS] for n, line in enumerate(source.splitlines(), 1)
            if n not in in_string and len(line.strip()) > 40
            and not line.strip().startswith("#")]


BUILTIN: dict[str, Callable[[int, int], TextSet]] = {
    "stdlib_topics": stdlib_topics,
    "prose_or_code": prose_or_code,
}


def read_jsonl(path: Path) -> TextSet:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            _add(row, f"{path}:{n}", texts, labels)
    return TextSet(path.stem, texts, labels)


def _add(row: Any, where: str, texts: list[str], labels: list[str]) -> None:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) \
            or "label" not in row or isinstance(row["label"], (dict, list)):
        raise ValueError(f"{where}: expected an object with a string \"text\" and a scalar "
                         "\"label\"")
    texts.append(row["text"])
    labels.append(str(row["label"]))


def load_dataset_set(name: str, split: str = "train", limit: int | None = None) -> TextSet:
    """A `datasets` dataset (Hub id or local folder) with `text` and `label` columns."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # datasets raises many types; keep its message, name the input
        raise ValueError(f"labelled set {name!r} (split {split!r}): {e}") from e
    texts: list[str] = []
    labels: list[str] = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        _add(row, f"labelled set {name!r} row {i}", texts, labels)
    return TextSet(Path(name).name or name, texts, labels)


def load_text_set(spec: str, per_class: int = 50, seed: int = 0, split: str = "train"
                  ) -> TextSet:
    """The labelled set `spec` names (module docstring); at most `per_class` texts per label,
    drawn with `seed`. One-line errors for a missing file and for fewer than two labels."""
    if spec in BUILTIN:
        found = BUILTIN[spec](per_class, seed)
    elif spec.endswith(".jsonl"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"labelled set {spec}: no such file")
        found = read_jsonl(path)
    else:
        found = load_dataset_set(spec, split)
    found = _cap(found, per_class, seed)
    classes = found.classes
    if len(classes) < 2:
        what = f"one class ({classes[0]!r})" if classes else "no texts"
        raise ValueError(f"labelled set {spec} has {what}; sparse probing needs two or more "
                         "labels")
    return found


def _cap(ts: TextSet, per_class: int, seed: int) -> TextSet:
    by: dict[str, list[int]] = {}
    for i, label in enumerate(ts.labels):
        by.setdefault(label, []).append(i)
    keep: list[int] = []
    rng = random.Random(seed)
    for idx in by.values():
        if len(idx) > per_class:
            idx = sorted(rng.sample(idx, per_class))
        keep += idx
    keep.sort()
    return TextSet(ts.name, [ts.texts[i] for i in keep], [ts.labels[i] for i in keep])
