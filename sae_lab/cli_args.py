"""Command-line flags from a config dataclass (sae_lab.config): one `--field-name` per field, its
type and default from the field, its help from the field's docstring; and back to the config."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

from sae_lab.config import field_docs, parse

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser, cls: type,
                    flags: dict[str, str] | None = None,
                    metavars: dict[str, str] | None = None) -> None:
    """Add a flag per field of `cls` (dest = the field name). `flags` renames some
    (e.g. {"overrides": "--set"}); list fields repeat (`--set a=1 --set b=2`), bools switch on."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = (flags or {}).get(f.name, "--" + f.name.replace("_", "-"))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        doc = " ".join(docs.get(f.name, "").split())
        kind = _plain(hints[f.name])
        metavar = (metavars or {}).get(f.name, "N" if kind is int else f.name.upper())
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", default=default,
                                help=doc)
        elif typing.get_origin(kind) is list:  # default None: append would grow the default
            parser.add_argument(flag, dest=f.name, action="append", metavar=metavar,
                                type=typing.get_args(kind)[0], help=f"{doc} (repeatable)")
        elif typing.get_origin(kind) is Literal:
            parser.add_argument(flag, dest=f.name, choices=typing.get_args(kind),
                                default=default, help=f"{doc} (default: %(default)s)")
        else:
            default_note = "" if default is None else " (default: %(default)s)"
            parser.add_argument(flag, dest=f.name, type=kind, default=default, metavar=metavar,
                                help=doc + default_note)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config the flags describe (flags not given keep the field's default); errors are one
    ConfigError line naming the field."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return parse(cls, {k: v for k, v in values.items() if v is not None})


def _plain(tp: Any) -> Any:
    """`int | None` -> int; Annotated[int, ...] -> int; others unchanged."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _plain(args[0])
    return tp
