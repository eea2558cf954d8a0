"""name -> architecture. Each architecture's module, sae_lab.sae.<name>, registers its class
(`@register`); a new architecture is that file plus its config in config.py (CONFIGS), by whose
names `architectures()` imports the modules when ARCHITECTURES is first needed. The configs alone
need no torch: parsing and checking one (below) imports no architecture. This module sits below
the architectures and base.py: it imports them only by name, on demand.

`AnySAEConfig` is the union of the registered configs, picked by `architecture` (default topk):

    parse_sae_config({"architecture": "relu", "sparsity_coef": 2})   # -> ReLUConfig(...)
    sae_config("topk", k=32)                                         # -> TopKConfig(k=32)
"""

from __future__ import annotations

import importlib
import typing
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BeforeValidator, Field

from sae_lab.config import ConfigError, field_docs, parse, register_tags
from sae_lab.sae.config import COMMON_FIELDS, CONFIGS, LEGACY_DEFAULTS, SAEConfig, own_fields
from sae_lab.sae.config import searchable as searchable_fields

if TYPE_CHECKING:
    from sae_lab.sae.base import SAE

DEFAULT_ARCHITECTURE = "topk"
ARCHITECTURES: dict[str, type[SAE]] = {}
"""Registered architectures by name; each class has `.name` and `.config_cls`."""


def register(cls: type[SAE]) -> type[SAE]:
    """Class decorator: add an architecture to ARCHITECTURES (name from its config's tag)."""
    name = typing.get_args(cls.config_cls.__pydantic_fields__["architecture"].annotation)[0]
    if CONFIGS.get(name) is not cls.config_cls:
        raise TypeError(f"{cls.__name__}: its config {cls.config_cls.__name__} is not "
                        f"CONFIGS[{name!r}] (sae/config.py)")
    cls.name = name
    cls.uses = own_fields(cls.config_cls)
    if "searchable" not in cls.__dict__:
        cls.searchable = searchable_fields(cls.config_cls)
    ARCHITECTURES[name] = cls
    return cls


def architectures() -> dict[str, type[SAE]]:
    """ARCHITECTURES, complete: the module of each architecture in CONFIGS (sae_lab.sae.<name>,
    which registers it) imported first, in CONFIGS' order."""
    for name in CONFIGS:
        if name not in ARCHITECTURES:
            importlib.import_module(f"sae_lab.sae.{name}")
    return ARCHITECTURES


for _name in CONFIGS:
    register_tags(_name, after="sae")


def _with_architecture(data: Any) -> Any:
    """A mapping without `architecture` is topk; an unknown one, or a field of another
    architecture that this one does not have, is one line naming it. (A field of none is left to
    the config's own check, which lists every such error with a did-you-mean.)"""
    if not isinstance(data, dict):
        return data
    name = data.get("architecture", DEFAULT_ARCHITECTURE)
    if name not in CONFIGS:
        raise ConfigError(f"sae.architecture={name!r}: must be one of {sorted(CONFIGS)}")
    known = CONFIGS[name].__pydantic_fields__
    for key in data:
        if key not in known and architectures_with(key):
            raise ConfigError(
                f"sae.{key}={data[key]!r} does not apply to architecture {name!r} "
                f"(its fields: {sorted(set(known) - {'architecture'})})"
            )
    return {**data, "architecture": name}


def architectures_with(field: str) -> list[str]:
    """The architectures whose config has `field` (from CONFIGS: no architecture is imported)."""
    return [n for n, c in CONFIGS.items() if field in c.__pydantic_fields__]


_union: list[Any] = []


def any_sae_config() -> Any:
    """The union of the registered configs, discriminated by `architecture` (see module doc)."""
    if not _union:
        configs = tuple(CONFIGS.values())
        _union.append(Annotated[
            Union[configs],  # noqa: UP007 (a runtime tuple of types)
            Field(discriminator="architecture"),
            BeforeValidator(_with_architecture),
        ])
    return _union[0]


def parse_sae_config(data: Any, where: str = "sae") -> SAEConfig:
    """The config a mapping names by `architecture` (default topk); ConfigError otherwise."""
    return parse(any_sae_config(), data, where)


def sae_config(architecture: str = DEFAULT_ARCHITECTURE, **fields: Any) -> SAEConfig:
    """`sae_config("relu", sparsity_coef=2.0)` -> ReLUConfig(sparsity_coef=2.0)."""
    return parse_sae_config({"architecture": architecture, **fields})


def parse_saved_sae_config(data: dict[str, Any]) -> SAEConfig:
    """A cfg.json "sae" dict, also one saved before per-architecture configs (flat, with every
    architecture's fields): fields the architecture does not have are dropped where they still
    hold the old defaults; one saved before token_norm existed gets token_norm off."""
    name = data.get("architecture", DEFAULT_ARCHITECTURE)
    cls = CONFIGS.get(name)
    if cls is not None:
        known = cls.__pydantic_fields__
        data = {
            k: v for k, v in data.items()
            if k in known or k not in LEGACY_DEFAULTS or v != LEGACY_DEFAULTS[k]
        }
        if data.get("sparsity_coef") == -1.0:  # old "architecture default"
            del data["sparsity_coef"]
        data.setdefault("token_norm", False)  # saved before it existed: trained without it
    return parse_sae_config(data)


def reference_rows(prefix: str = "sae.") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, default, doc) of every SAE config field: the shared ones, then each
    architecture's own, the doc prefixed with the architectures that have the field."""
    rows: dict[str, list[Any]] = {}
    owners: dict[str, dict[str, Any]] = {}
    for name, cls in CONFIGS.items():
        docs = field_docs(cls)
        docs["architecture"] = f"One of {', '.join(CONFIGS)}."
        for field_name, info in cls.__pydantic_fields__.items():
            default = DEFAULT_ARCHITECTURE if field_name == "architecture" else info.default
            owners.setdefault(field_name, {})[name] = default
            rows.setdefault(field_name, [f"{prefix}{field_name}", _type_name(info.annotation),
                                         default, docs.get(field_name, "")])
    for field_name, by_arch in owners.items():
        row = rows[field_name]
        if field_name not in COMMON_FIELDS:
            doc = row[3]
            if doc[1:2].islower():  # "Steps over ..." reads "topk: steps over ..."; "EMA ..."
                doc = doc[:1].lower() + doc[1:]
            row[3] = f"{'/'.join(by_arch)}: {doc}"
        if field_name != "architecture" and len(set(by_arch.values())) > 1:
            row[3] += " Default: " + ", ".join(f"{a} {d!r}" for a, d in by_arch.items()) + "."
    rows["architecture"][1] = " | ".join(repr(a) for a in CONFIGS)
    return [tuple(r) for r in rows.values()]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))

