"""How every config in sae_lab is declared, read, checked and documented.

Configs are plain dataclasses validated by pydantic v2 (`@config`): types are checked and coerced
on construction (YAML 1.1's `1e-3` string becomes a float, `512.5` for an int is refused),
unknown keys are refused, and the docstring under each field is its documentation, used by
`--help`, the README reference and the JSON Schema (`sae-lab schema`). Cross-field checks go in
`__post_init__` and raise `ConfigError` (or ValueError) naming the field.

    @config
    class Foo:
        n: Annotated[int, Field(ge=1)] = 4
        \"\"\"How many.\"\"\"

    parse(Foo, {"n": "8"}, "foo")  # -> Foo(n=8); errors are one line: "foo.n=0: must be >= 1"
"""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

T = TypeVar("T")

CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True, arbitrary_types_allowed=True)


class ConfigError(ValueError):
    """A config value is missing, of the wrong type, out of range or does not apply; the message
    names the dotted field."""


def config(cls: type[T]) -> type[T]:
    """Declare a config dataclass: typed fields, one docstring per field, validated on
    construction."""
    return _pydantic_dataclass(cls, config=CONFIG)


@cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def parse(tp: Any, data: Any, where: str = "") -> Any:
    """Validate `data` (a mapping from YAML or JSON) into `tp`; errors become one ConfigError
    line naming the dotted field, prefixed with `where` (e.g. "sae")."""
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as e:
        raise ConfigError(format_error(e, where)) from None


def format_error(e: ValidationError, where: str = "") -> str:
    """One line: `field.path=value: message`, first error only (plus how many more)."""
    errors = e.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"] if not _is_tag(p)]
    name = ".".join([where, *loc] if where else loc) or where or "config"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        text = f"unknown field {name!r}"
    elif first["type"] == "missing":
        text = f"{name}: required field is missing"
    elif first["type"] == "value_error" and "=" in msg.split(":")[0]:
        text = msg  # a __post_init__ check that already names its field and value
    else:
        text = f"{name}={first.get('input')!r}: {msg}"
    more = len(errors) - 1
    return text + (f" (and {more} more error{'s' * (more > 1)})" if more else "")


def _is_tag(part: Any) -> bool:
    # pydantic puts a discriminated union's tag (and function-validator names) into `loc`.
    return isinstance(part, str) and (part.startswith("function-") or part in _TAGS)


_TAGS: set[str] = set()


def register_tags(*tags: str) -> None:
    """Names that appear in error paths as a union's tag (e.g. architecture names), to drop."""
    _TAGS.update(tags)


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    """For `__post_init__` checks: raise ConfigError("name=value: must be allowed")."""
    if not ok:
        raise ConfigError(f"{name}={value!r}: must be {allowed}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON/YAML-able data (tuples become lists)."""
    return _adapter(type(cfg)).dump_python(cfg, mode="json")


def json_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema of a config type, with the field docstrings as descriptions."""
    return _adapter(tp).json_schema()


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring, inherited ones included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        fields_info = getattr(klass, "__pydantic_fields__", None)
        if not fields_info:
            continue
        for name, info in fields_info.items():
            if info.description:
                docs[name] = info.description
    return docs


class _Loader(yaml.SafeLoader):
    """SafeLoader reading floats as YAML 1.2 does: `1e-3` and `1e6` are numbers, not strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str, source: str) -> Any:
    """Read YAML (floats as in YAML 1.2), with a one-line error naming the file and line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None


def apply_overrides(d: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `key.sub=value` strings in place; values are read as YAML (numbers, lists, null)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
        node[parts[-1]] = load_yaml(value, f"--set {key}")
    return d


def is_config(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and hasattr(obj, "__pydantic_fields__")


__all__ = [
    "CONFIG", "ConfigError", "config", "parse", "format_error", "register_tags", "require",
    "to_dict", "json_schema", "field_docs", "load_yaml", "apply_overrides", "is_config",
]
