"""`sae-lab schema`: JSON Schemas of the train and sweep YAML files, so that editors complete
and check them (field docs become hover text).

    sae-lab schema --out schemas/      -> schemas/train.schema.json, schemas/sweep.schema.json

Point an editor with the YAML language server (VS Code's YAML extension, ...) at one by a first
line `# yaml-language-server: $schema=schemas/train.schema.json` in the YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sae_lab.config import json_schema
from sae_lab.files import atomic_write_json


def train_schema() -> dict[str, Any]:
    from sae_lab.training.config import TrainConfig

    schema = json_schema(TrainConfig, "sae-lab train config")
    schema["properties"]["sae"] = _sae_section(schema["properties"]["sae"])
    return schema


def _sae_section(union: dict[str, Any]) -> dict[str, Any]:
    """The SAE section as if/then on `architecture` rather than pydantic's discriminated oneOf:
    `architecture` may be left out (it defaults to topk), and a wrong field is reported at its
    own path (sae.k), which a oneOf reports only at `sae`."""
    from sae_lab.sae.registry import DEFAULT_ARCHITECTURE

    mapping = union["discriminator"]["mapping"]
    cases = [{"if": {"properties": {"architecture": {"const": name}},
                     "required": ["architecture"]},
              "then": {"$ref": ref}} for name, ref in mapping.items()]
    cases.append({"if": {"not": {"required": ["architecture"]}},
                  "then": {"$ref": mapping[DEFAULT_ARCHITECTURE]}})
    return {"description": union.get("description", ""), "type": "object",
            "properties": {"architecture": {"enum": list(mapping),
                                            "default": DEFAULT_ARCHITECTURE}},
            "allOf": cases}


def sweep_schema() -> dict[str, Any]:
    """The sweep's schema, with `base:` checked as the training config it is."""
    from sae_lab.sweep.schema import SweepConfig

    schema = json_schema(SweepConfig, "sae-lab sweep config")
    train = train_schema()
    defs = schema.setdefault("$defs", {})
    defs.update(train.pop("$defs", {}))
    train.pop("$schema")
    defs["TrainConfig"] = train
    base = schema["properties"]["base"]
    schema["properties"]["base"] = {"$ref": "#/$defs/TrainConfig",
                                    "description": base.get("description", "")}
    return schema


SCHEMAS = {"train.schema.json": train_schema, "sweep.schema.json": sweep_schema}


def write_schemas(out: str | Path) -> list[Path]:
    """Write every schema into `out` (created if needed); each file is replaced atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SCHEMAS.items():
        paths.append(atomic_write_json(out / name, make()))
    return paths
