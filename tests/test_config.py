"""Configs on sae_lab.config: YAML numbers, types checked up front, one-line errors naming the
dotted field, field docs as --help and reference rows, flags built from a config."""

from __future__ import annotations

import argparse
from dataclasses import field
from typing import Annotated, Literal

import pytest
import yaml
from pydantic import Field

from sae_lab.cli import main
from sae_lab.config import (
    ConfigError,
    config,
    field_docs,
    json_schema,
    parse,
    reference,
    register_renamed,
    require,
)
from sae_lab.training.config import TrainConfig


def train_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(["train", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- 1e-3 is a number, in YAML and in --set ---------------------------------------------


def test_scientific_notation_is_a_number_in_set_and_yaml(tmp_path, capsys):
    code, out, err = train_cli(["--print-config", "--set", "lr=1e-3", "--set", "max_tokens=1e6"],
                               capsys)
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["lr"] == 0.001 and printed["max_tokens"] == 1_000_000
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nmax_tokens: 1e6\nsae: {aux_coef: 3e-2}\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.lr, cfg.max_tokens, cfg.sae.aux_coef) == (0.001, 1_000_000, 0.03)
    assert isinstance(cfg.max_tokens, int)


# --- types checked up front, naming the field -------------------------------------------


@pytest.mark.parametrize("text, culprit", [
    ("batch_size: 512.5", "batch_size=512.5: must be a valid integer"),
    ("sae: {k: 8.5}", "sae.k=8.5: must be a valid integer"),
    ("sae: 3", "sae=3: must be a dictionary"),
    ("data: {synthetic: {d: 0}}", "data.synthetic.d=0: must be >= 1"),
    ("lr: fast", "lr='fast': must be a valid number"),
    ("adam_betas: [0.9, 1.0]", "adam_betas.1=1.0: must be < 1"),
    ("nan_policy: ignore", "nan_policy='ignore': must be 'error' or 'skip'"),
    ("max_tokens: 10\nbatch_size: 20", "max_tokens=10: must be >= batch_size=20"),
    ("data: {synthetic: {active: 600}}", "data.synthetic.active=600.0: must be <= n_features=512"),
    ("data: {npy: a.npy, shards: b}", "data: set exactly one of synthetic, npy, shards"),
    ("lrr: 0.1", "unknown field 'lrr'; did you mean 'lr'?"),
    ("data: {synthetic: {n_feature: 3}}",
     "unknown field 'data.synthetic.n_feature'; did you mean 'n_features'?"),
    ("lr: [1e-3\nbatch_size: 8", "c.yaml:2: invalid YAML"),
])
def test_bad_train_yaml_is_one_line_naming_the_field(text, culprit, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    code, _, err = train_cli([str(path), "--print-config"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("sae-lab train: error: ") and culprit in lines[0], lines[0]


@pytest.mark.parametrize("text, culprit", [
    ("sae: {expansion_factr: 4}",
     "unknown field 'sae.expansion_factr'; did you mean 'expansion_factor'?"),
    ("sae: {architecture: relu, sparsity_coeff: 2}",
     "unknown field 'sae.sparsity_coeff'; did you mean 'sparsity_coef'?"),
    ("sae: {architecture: jumprelu, bandwith: 0.1}",
     "unknown field 'sae.bandwith'; did you mean 'bandwidth'?"),
])
def test_nested_typo_gets_a_did_you_mean(text, culprit, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    code, _, err = train_cli([str(path), "--print-config"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == f"sae-lab train: error: {culprit}"


def test_every_error_is_listed_on_the_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("batch_size: many\nlr: fast\nsae: {k: some, expansion_factr: 4}\n")
    code, _, err = train_cli([str(path), "--print-config"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    for culprit in ("batch_size='many': must be a valid integer", "lr='fast': must be a valid "
                    "number", "sae.k='some': must be a valid integer",
                    "unknown field 'sae.expansion_factr'; did you mean 'expansion_factor'?"):
        assert culprit in lines[0], lines[0]
    assert "more error" not in lines[0]


def test_sae_config_with_an_architecture_builds_that_architecture_s_config():
    import sae_lab
    from sae_lab.sae import JumpReLUConfig, SAEConfig, TopKConfig

    cfg = sae_lab.SAEConfig(architecture="jumprelu", sparsity_coef=2)
    assert type(cfg) is JumpReLUConfig and isinstance(cfg, SAEConfig)
    assert cfg.sparsity_coef == 2.0 and cfg == sae_lab.sae_config("jumprelu", sparsity_coef=2)
    assert type(SAEConfig(architecture="topk", k=3)) is TopKConfig
    assert type(SAEConfig(d_in=4)) is SAEConfig  # the shared fields alone
    with pytest.raises(ConfigError, match=r"'sparsity_coef' is a field of relu, gated, jumprelu"
                                          r": pass the architecture"):
        SAEConfig(sparsity_coef=2)
    with pytest.raises(ConfigError, match=r"sae.architecture='nope': must be one of"):
        SAEConfig(architecture="nope")
    import copy
    import pickle
    assert copy.deepcopy(cfg) == cfg == pickle.loads(pickle.dumps(cfg))


def test_every_architecture_config_is_a_top_level_name():
    import sae_lab
    from sae_lab.sae import ARCHITECTURES

    for cls in ARCHITECTURES.values():
        name = cls.config_cls.__name__
        assert getattr(sae_lab, name) is cls.config_cls and name in sae_lab.__all__


def test_bad_sweep_base_is_caught_before_launch(tmp_path, capsys):
    sweep = {
        "architectures": ["topk"], "space": {"topk": {"k": {"grid": [2, 4]}}},
        "base": {"batch_size": 512.5, "data": {"synthetic": {"d": 8}}},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), "--check"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1
    assert "base.batch_size=512.5: must be a valid integer" in lines[0]


def test_precision_32_written_as_a_number():
    assert TrainConfig.from_dict({"precision": 32}).precision == "32"
    with pytest.raises(ConfigError, match=r"^precision='16': must be 'auto', '32', '16-mixed' "
                                          r"or 'bf16-mixed'$"):
        TrainConfig.from_dict({"precision": 16})


def test_sweep_round_trips_through_its_dict():
    from sae_lab.sweep.schema import sweep_from_dict

    d = {"architectures": ["relu", "topk"], "scheduler": "none",
         "base": {"data": {"synthetic": {"d": 8}}, "lr": "3e-4"},
         "space": {"all": {"lr": {"loguniform": ["1e-4", 1e-2]}, "seed": 3},
                   "topk": {"k": {"uniform": [2, 6.4]}, "k_aux": {"choice": [0, 4]}}}}
    sweep = sweep_from_dict(d)
    assert sweep.scheduler.type == "none"
    again = sweep_from_dict(sweep.to_dict())
    assert again.to_dict() == sweep.to_dict() and again.params == sweep.params
    k = sweep.params["topk"]["sae.k"]
    assert (k.kind, k.values, k.integer) == ("uniform", [2, 6], True)  # integer field
    assert sweep.params["relu"]["lr"].values == [1e-4, 1e-2]
    assert sweep.params["relu"]["seed"].kind == "constant"


def test_direct_construction_raises_the_same_one_line_error():
    with pytest.raises(ConfigError, match=r"^lr=-1: must be > 0$"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match=r"^unknown field 'bacth_size'; did you mean"):
        TrainConfig(bacth_size=8)


def test_config_round_trips_through_yaml(tmp_path):
    cfg = TrainConfig.from_dict({"lr": 1e-3, "adam_betas": [0.8, 0.9], "sae": {"k": 8}})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    assert cfg.to_dict()["adam_betas"] == [0.8, 0.9] and cfg.adam_betas == (0.8, 0.9)


# --- the library ----------------------------------------------------------------------------


@config
class Inner:
    """A section."""

    n: Annotated[int, Field(ge=1)] = 4
    """How many."""
    mode: Literal["a", "b"] = "a"
    """Which mode."""

    def __post_init__(self) -> None:
        require(self.mode == "a" or self.n > 1, "n", self.n, "> 1 in mode b")


@config
class Base:
    """Shared fields."""

    seed: int = 0
    """Random seed."""


@config
class Outer(Base):
    """The top level."""

    inner: Inner = field(default_factory=Inner)
    """The section."""
    extra: Inner | None = None
    """An optional section."""
    rate: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """A rate."""


def test_require_names_the_full_dotted_path():
    with pytest.raises(ConfigError, match=r"^where\.inner\.n=1: must be > 1 in mode b$"):
        parse(Outer, {"inner": {"n": 1, "mode": "b"}}, "where")
    with pytest.raises(ConfigError, match=r"^extra\.mode='c': must be 'a' or 'b'$"):
        parse(Outer, {"extra": {"mode": "c"}})
    assert parse(Outer, {"rate": "2.5e-1"}).rate == 0.25


def test_sweep_errors_raised_after_parsing_are_not_prefixed():
    from sae_lab.sweep.schema import sweep_from_dict

    with pytest.raises(ConfigError, match=r"^space\.relu: empty search space"):
        sweep_from_dict({"architectures": ["relu"], "space": {"relu": {"lr": 1e-3}},
                         "base": {"data": {"synthetic": {"d": 8}}}})


def test_renamed_key_says_what_replaced_it(monkeypatch):
    import sae_lab.config as C

    monkeypatch.setattr(C, "_RENAMED", {})
    register_renamed({"inner.count": "inner.n"})
    with pytest.raises(ConfigError, match=r"^unknown field 'inner.count': renamed, use 'inner.n'$"):
        parse(Outer, {"inner": {"count": 3}})


def test_field_docs_and_schema_include_inherited_fields():
    assert field_docs(Outer)["seed"] == "Random seed."
    props = json_schema(Outer)["properties"]
    assert props["seed"]["description"] == "Random seed."  # pydantic alone leaves it out
    assert props["rate"]["description"] == "A rate."


def test_reference_rows_expand_sections():
    rows = {name: (tp, default, doc) for name, tp, default, doc in reference(Outer)}
    assert rows["seed"] == ("int", 0, "Random seed.")
    assert rows["inner.n"] == ("int (>= 1)", 4, "How many.")
    assert rows["inner.mode"] == ("'a' | 'b'", "a", "Which mode.")
    assert rows["extra"][0] == "Inner | None" and "extra.n" in rows  # optional: row + fields
    assert "inner" not in rows  # a section with a default has only its fields
    assert rows["rate"][0] == "float (> 0, < 1)"


def test_flags_from_a_config():
    from sae_lab.cli.args import add_config_arguments, config_from_args

    @config
    class Cmd:
        path: str
        """Where."""
        layers: tuple[int, ...] = (0,)
        """Which layers."""
        dtype: Literal["float16", "float32"] = "float16"
        """Stored dtype."""
        verbose: bool = True
        """Talk."""
        name: str | None = None
        """A name."""
        n: Annotated[int, Field(ge=2)] = 2
        """Count."""

    p = argparse.ArgumentParser()
    add_config_arguments(p, Cmd, flags={"layers": "--layer"})
    args = p.parse_args(["--path", "x", "--layer", "1", "2", "--no-verbose", "--n", "3"])
    assert config_from_args(Cmd, args) == Cmd(path="x", layers=(1, 2), dtype="float16",
                                              verbose=False, name=None, n=3)
    helps = {a.dest: a for a in p._actions}
    assert helps["path"].required and helps["dtype"].choices == ("float16", "float32")
    assert helps["n"].help == "Count." and helps["layers"].default == [0]
    with pytest.raises(ConfigError, match=r"^n=1: must be >= 2$"):
        config_from_args(Cmd, p.parse_args(["--path", "x", "--n", "1"]))


def test_harvest_config_choices_match_what_harvest_supports():
    from typing import get_args

    from sae_lab.data.harvest import HarvestConfig
    from sae_lab.data.shards import DTYPES
    from sae_lab.lm import hooks as L

    hints = {n: f.annotation for n, f in HarvestConfig.__pydantic_fields__.items()}
    assert set(get_args(hints["hook"])) == set(L.HOOKS)
    assert set(get_args(hints["dtype"])) == set(get_args(hints["model_dtype"])) == set(DTYPES)
    with pytest.raises(ConfigError, match=r"^layers=\(1, 1\): must be distinct$"):
        HarvestConfig(model="m", dataset="d", out="o", layers=(1, 1))
    with pytest.raises(ConfigError, match=r"^shard_rows=5: must be 0 or >= block_rows=4096$"):
        HarvestConfig(model="m", dataset="d", out="o", shard_rows=5)


def test_harvest_flag_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["harvest", "--model", "m", "--dataset", "d", "--out", "o", "--ctx-len", "1"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and lines == ["sae-lab harvest: error: ctx_len=1: must be >= 2"]
