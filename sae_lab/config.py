"""How every config in sae_lab is declared, read, checked and documented.

Configs are plain dataclasses validated by pydantic v2 (`@config`): types are checked and coerced
on construction (YAML 1.1's `1e-3` string becomes a float, `512.5` for an int is refused),
unknown keys are refused, and the docstring under each field is its documentation, used by
`--help`, the docs' reference and the JSON Schema (`sae-lab schema`). Cross-field checks go in
`__post_init__` as `require(ok, field, value, "what it must be")`; the error names the full
dotted path (`data.synthetic.active=600.0: must be <= n_features=512`).

Why pydantic: typed coercion and strictness, error locations, field docstrings
(`use_attribute_docstrings`) and JSON Schema come with it, over the plain dataclasses the code
already used; it is ubiquitous and well kept.

    @config
    class Foo:
        n: Annotated[int, Field(ge=1)] = 4
        \"\"\"How many.\"\"\"

    parse(Foo, {"n": "8"}, "foo")  # -> Foo(n=8); errors are one line: "foo.n=0: must be >= 1"
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import types
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass
from pydantic.json_schema import GenerateJsonSchema

T = TypeVar("T")

CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True, arbitrary_types_allowed=True)


def _fspath(v: Any) -> Any:
    return os.fspath(v) if isinstance(v, os.PathLike) else v


PathStr = Annotated[str, BeforeValidator(_fspath)]
"""A path field: written as a string in YAML, given as a str or a pathlib.Path in Python."""


class ConfigError(ValueError):
    """A config value is missing, of the wrong type, out of range or does not apply; the message
    names the dotted field."""


def config(cls: type[T]) -> type[T]:
    """Declare a config dataclass: typed fields, one docstring per field, validated on
    construction (`Foo(n=0)` raises the same one-line ConfigError as `parse`)."""
    out = _pydantic_dataclass(cls, config=CONFIG)
    init = out.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as e:
            raise ConfigError(format_error(e, "", out)) from None

    out.__init__ = __init__
    return out


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(tp)


def parse(tp: Any, data: Any, where: str = "") -> Any:
    """Validate `data` (a mapping from YAML or JSON) into `tp`; errors become one ConfigError
    line naming the dotted field, prefixed with `where` (e.g. "sae")."""
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as e:
        raise ConfigError(format_error(e, where, tp)) from None


def format_error(e: ValidationError, where: str = "", tp: Any = None) -> str:
    """One line: `field.path=value: message` for every error, joined by "; "."""
    texts: list[str] = []
    for error in e.errors(include_url=False):
        text = _format_one(error, where, tp)
        if text not in texts:
            texts.append(text)
    return "; ".join(texts)


def _format_one(error: Any, where: str, tp: Any) -> str:
    raw = [*(where.split(".")[-1:] if where else [None]), *(str(p) for p in error["loc"])]
    loc = [p for parent, p in zip(raw, raw[1:], strict=False) if not _is_tag(p, parent)]
    name = ".".join([where, *loc] if where else loc) or where or "config"
    msg = _message(error)
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        text = f"unknown field {name!r}"
        new = _RENAMED.get(".".join(loc)) or _RENAMED.get(loc[-1] if loc else "")
        # the path with its tags, so that a union's member (an architecture) narrows the choice
        tagged = [str(p) for p in error["loc"][:-1] if not str(p).startswith("function-")]
        close = difflib.get_close_matches(loc[-1], _fields_at(tp, tagged), 1) if loc else []
        if new:
            text += f": renamed, use {new!r}"
        elif close:
            text += f"; did you mean {close[0]!r}?"
        return text
    if error["type"] == "missing":
        return f"{name}: required field is missing"
    if error["type"] == "value_error":
        return _check_message(error, [where, *loc] if where else loc, msg)
    return f"{name}={error.get('input')!r}: {msg}"


def _fields_at(tp: Any, path: list[str]) -> list[str]:
    """Field names of the config section at `path` inside `tp` (for "did you mean"); a union's
    tag in `path` (an architecture's name) keeps only the member it names."""
    sections = _sections(tp)
    for part in path:
        tagged = [c for c in sections if _has_tag(c, part)]
        if tagged:
            sections = tagged
            continue
        hints = [_hints(c) for c in sections]
        sections = [s for h in hints if part in h for s in _sections(h[part])]
    return sorted({f.name for c in sections for f in dataclasses.fields(c)})


def _has_tag(cls: type, tag: str) -> bool:
    """`cls` is the member of a discriminated union that `tag` picks (a Literal field holding
    exactly it, such as `architecture: Literal["relu"]`)."""
    if tag not in _TAGS and not _TAGS_AFTER.get(tag):
        return False
    return any(get_origin(tp) is Literal and get_args(tp) == (tag,)
               for tp in _hints(cls).values())


def _hints(cls: type) -> dict[str, Any]:
    infos = getattr(cls, "__pydantic_fields__", None)
    return {n: i.annotation for n, i in infos.items()} if infos else get_type_hints(cls)


def _check_message(error: Any, path: list[str], msg: str) -> str:
    """A `__post_init__` check: `require` names a field of the class that raised it (the path
    is put in front); other messages name their section, or already their full field name."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        return f"{'.'.join([*path, cause.name])}={cause.value!r}: must be {cause.allowed}"
    name = ".".join(path)
    if not name or "=" in msg.split(":")[0] or msg.startswith(name):
        return msg
    return f"{name}: {msg}"


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _message(error: Any) -> str:
    """pydantic's message, shortened: "must be >= 1" rather than "Input should be greater than
    or equal to 1"."""
    if error["type"] in _BOUNDS:
        key, op = _BOUNDS[error["type"]]
        bound = error["ctx"][key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # "must be > 0", not "> 0.0"
        return f"must be {op} {bound}"
    if error["type"] in ("model_attributes_type", "dataclass_type", "model_type"):
        return "must be a dictionary (a config section)"
    msg = error["msg"].removeprefix("Value error, ")
    msg = re.sub(r"^\w+ should have (.*?)(?: after validation)?, not \d+$", r"must have \1", msg)
    return re.sub(r"^Input should be ", "must be ", msg)


def _is_tag(part: str, parent: str | None) -> bool:
    # pydantic puts a discriminated union's tag (and function-validator names) into `loc`.
    return part.startswith("function-") or part in _TAGS or parent in _TAGS_AFTER.get(part, ())


_TAGS: set[str] = set()
_TAGS_AFTER: dict[str, set[str]] = {}


def register_tags(*tags: str, after: str | None = None) -> None:
    """Names that appear in error paths as a union's tag, to drop: everywhere, or only right
    after the field `after` (architecture names are tags after `sae`, but keys of `space`)."""
    for tag in tags:
        if after is None:
            _TAGS.add(tag)
        else:
            _TAGS_AFTER.setdefault(tag, set()).add(after)


_RENAMED: dict[str, str] = {}


def register_renamed(renamed: dict[str, str]) -> None:
    """Old key (a dotted path such as "sae.l1_coef", or a bare field name) -> what replaced it,
    so that an old YAML fails with one line saying what to write instead."""
    _RENAMED.update(renamed)


class FieldError(ConfigError):
    """A `require` check failed: `name` is a field of the config that raised it."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        super().__init__(f"{name}={value!r}: must be {allowed}")
        self.name, self.value, self.allowed = name, value, allowed


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    """For `__post_init__` checks: raise ConfigError("name=value: must be allowed"). `name` is
    the field of this class; errors name the full dotted path (`data.synthetic.active=...`)."""
    if not ok:
        raise FieldError(name, value, allowed)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON/YAML-able data (tuples become lists)."""
    return _adapter(type(cfg)).dump_python(cfg, mode="json")


class _DocumentedSchema(GenerateJsonSchema):
    """pydantic reads field docstrings from each class's own source only; inherited fields get
    their docs from the class that declared them."""

    def dataclass_schema(self, schema: Any) -> Any:
        out = super().dataclass_schema(schema)
        docs = field_docs(schema["cls"])
        for name, prop in out.get("properties", {}).items():
            if "description" not in prop and name in docs:
                prop["description"] = docs[name]
        return out


def json_schema(tp: Any, title: str | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a config type, field docstrings as descriptions."""
    schema = _adapter(tp).json_schema(schema_generator=_DocumentedSchema)
    head = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    return {**head, **({"title": title} if title else {}), **schema}


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring, inherited ones included."""
    if not hasattr(cls, "__pydantic_fields__"):  # a plain dataclass: pydantic reads it too
        defs = TypeAdapter(list[cls], config=CONFIG).json_schema()["$defs"]  # type: ignore
        props = next(d for d in defs.values() if d.get("title") == cls.__name__)["properties"]
        return {name: p["description"] for name, p in props.items() if "description" in p}
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
    """SafeLoader reading floats and booleans as YAML 1.2 does: `1e-3` and `1e6` are numbers,
    not strings, and only true/false are booleans (`on:`, a key of the sweep's `evaluate:`,
    stays "on", not True)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


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


# --- reference rows (docs reference tables, --help epilogs) ---------------------------------


def reference(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, doc) of every field; a nested section is expanded into its
    fields, an optional one (default None) gets its own row first. The members of a union of
    sections (one config per architecture) are merged, each field listed once."""
    rows: list[tuple[str, str, Any, str]] = []
    docs = field_docs(cls)
    infos = getattr(cls, "__pydantic_fields__", {})
    hints = get_type_hints(cls) if not infos else {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        info = infos.get(f.name)
        tp = info.annotation if info is not None else hints[f.name]
        default = _default(f)
        sections = _sections(tp)
        if not sections or default is None:
            shown = "{...}" if dataclasses.is_dataclass(default) else default
            rows.append((name, _type_name(tp, info), shown, docs.get(f.name, "")))
        seen = {row[0] for row in rows}
        for section in sections:
            for row in reference(section, f"{name}."):
                if row[0] not in seen:
                    rows.append(row)
                    seen.add(row[0])
    return rows


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _sections(tp: Any) -> list[type]:
    """The dataclasses a field's type is made of (`X`, `X | None`, `Annotated[A | B, ...]`)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return [tp]
    if hasattr(tp, "__metadata__"):  # Annotated[X, ...]
        return _sections(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        return [s for a in get_args(tp) for s in _sections(a)]
    return []


class TypeName:
    """`Annotated[..., TypeName("param")]`: how the reference tables show a long type."""

    def __init__(self, name: str) -> None:
        self.name = name


def _type_name(tp: Any, info: Any = None) -> str:
    name = _name(tp)
    bounds = [f"{op} {getattr(m, key)}" for m in getattr(info, "metadata", ())
              for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
              if getattr(m, key, None) is not None]
    return name + (f" ({', '.join(bounds)})" if bounds else "")


def _name(tp: Any) -> str:
    args = get_args(tp)
    if hasattr(tp, "__metadata__"):  # Annotated[X, ...]
        named = [m.name for m in tp.__metadata__ if isinstance(m, TypeName)]
        return named[0] if named else _name(args[0])
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in args)
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_name(a) for a in args)
    if tp is type(None) or tp is Ellipsis:
        return "None" if tp is type(None) else "..."
    if get_origin(tp) is not None and args:
        return f"{_name(get_origin(tp))}[{', '.join(_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


__all__ = [
    "CONFIG", "ConfigError", "PathStr", "config", "parse", "format_error", "register_tags",
    "register_renamed", "require", "to_dict", "json_schema", "field_docs", "load_yaml",
    "apply_overrides", "is_config", "reference", "TypeName",
]
