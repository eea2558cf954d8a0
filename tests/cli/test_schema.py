"""`sae-lab schema`: the JSON Schemas accept the shipped sweeps and a train YAML, reject wrong
types, and carry the field docs as descriptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sae_lab.cli import main
from sae_lab.config import load_yaml

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
TRAIN_YAML = """
sae: {architecture: topk, k: 16, expansion_factor: 4}
data: {synthetic: {d: 32, n_tokens: 10000}}
lr: 1e-3
adam_betas: [0.9, 0.99]
max_tokens: 1e6
precision: bf16-mixed
"""


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("schemas")
    main(["schema", "--out", str(out)])
    return {p.name: json.loads(p.read_text()) for p in out.glob("*.schema.json")}


def errors(schema: dict, data: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [".".join(map(str, e.absolute_path)) for e in validator.iter_errors(data)]


def test_writes_both_schemas(schemas):
    assert set(schemas) == {"train.schema.json", "sweep.schema.json"}
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_shipped_sweeps_and_a_train_yaml_are_valid(schemas):
    sweeps = sorted((REPO / "sweeps").glob("*.yaml"))
    assert len(sweeps) >= 4
    for path in sweeps:
        assert errors(schemas["sweep.schema.json"], load_yaml(path.read_text(), path.name)) == []
    assert errors(schemas["train.schema.json"], load_yaml(TRAIN_YAML, "train")) == []


@pytest.mark.parametrize("name, data, where", [
    ("train.schema.json", {"batch_size": 512.5}, "batch_size"),
    ("train.schema.json", {"sae": {"k": "many"}}, "sae.k"),
    ("train.schema.json", {"lr": 0}, "lr"),
    ("train.schema.json", {"bogus": 1}, ""),
    ("train.schema.json", {"data": {"synthetic": {"d": 8, "n_feature": 3}}}, "data.synthetic"),
    ("sweep.schema.json", {"base": {"batch_size": 512.5}}, "base.batch_size"),
    ("sweep.schema.json", {"space": {"topk": {"lr": {"loguniform": [1e-4]}}}},
     "space.topk.lr"),
    ("sweep.schema.json", {"num_samples": 0}, "num_samples"),
    ("sweep.schema.json", {"metric": "accuracy"}, "metric"),
])
def test_wrong_types_are_rejected_at_the_field(schemas, name, data, where):
    assert where in errors(schemas[name], data)


def test_descriptions_come_from_the_field_docs(schemas):
    from sae_lab.config import field_docs
    from sae_lab.sweep.schema import SweepConfig
    from sae_lab.training.config import TrainConfig

    train = schemas["train.schema.json"]
    assert train["properties"]["lr"]["description"] == field_docs(TrainConfig)["lr"]
    for arch in ("TopKConfig", "ReLUConfig", "JumpReLUConfig"):
        sae = train["$defs"][arch]["properties"]
        assert all(p.get("description") for p in sae.values()), arch
    sweep = schemas["sweep.schema.json"]
    assert sweep["properties"]["num_samples"]["description"] == \
        field_docs(SweepConfig)["num_samples"]
    assert sweep["properties"]["base"]["$ref"] == "#/$defs/TrainConfig"
