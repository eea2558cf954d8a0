"""`sae-lab --help` and `sae-lab CMD --help`: fast (no torch import), complete, with defaults; a
config is read and checked before torch, Ray or Lightning is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sae_lab.cli import COMMANDS, build_parser


def run_main(argv: list[str]) -> subprocess.CompletedProcess:
    """`sae-lab ARGV` in a fresh interpreter; its stdout ends with the heavy libraries imported."""
    code = (f"import sys\nfrom sae_lab.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'transformers', "
            "'ray', 'pytorch_lightning') if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)


def modules_after(argv: list[str]) -> str:
    return run_main(argv).stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["harvest", "--help"], ["inspect", "--help"],
                                  ["eval", "--help"]])
def test_help_imports_no_heavy_library(argv):
    assert modules_after(argv) == "[]"


def test_listed_help_lines_are_the_commands_own():
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    own = {c.dest: c.help for c in sub._choices_actions}
    assert own == {name: text for name, text, _ in COMMANDS}
    lazy = next(a for a in build_parser(["eval"])._actions if hasattr(a, "choices")
                and a.choices)
    assert {c.dest: c.help for c in lazy._choices_actions} == own


@pytest.mark.parametrize("argv, shown", [
    (["harvest", "--help"], ["(default: 128)", "(default: resid_post)", "(default: 4096)"]),
    (["eval", "--help"], ["(default: 4096)", "(default: 64)"]),
    (["inspect", "--help"], ["(default: 10)", "(default: 12)", "(default: 1000)"]),
])
def test_help_shows_defaults(argv, shown, capsys):
    from sae_lab.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    text = " ".join(capsys.readouterr().out.split())
    for s in shown:
        assert s in text, s
    assert "(default: None)" not in text


SWEEP = """name: quick
base: {data: {synthetic: {d: 16, n_tokens: 4096}}, batch_size: 64, max_tokens: 1024}
architectures: [topk, relu]
space: {topk: {k: {grid: [2, 4]}}, relu: {sparsity_coef: {choice: [1.0, 2.0]}}}
"""


def test_sweep_check_reads_and_checks_without_torch(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    out = run_main(["sweep", str(tmp_path / "s.yaml"), "--check"]).stdout.splitlines()
    # topk's grid of 2, relu's choice drawn once (num_samples 1)
    assert out[-2] == "3 trials, metric objective (min), scheduler asha, search random: OK"
    assert out[-1] == "[]"
    (tmp_path / "bad.yaml").write_text(SWEEP.replace("k: {grid: [2, 4]}", "k: {grid: [2, 400]}"))
    bad = run_main(["sweep", str(tmp_path / "bad.yaml"), "--check"])
    assert "sae.k=400" in bad.stderr and "larger than the number of latents" in bad.stderr
    assert bad.stdout.splitlines()[-1] == "[]"


def test_checking_the_packed_demo_sweep_loads_no_torch():
    out = run_main(["sweep", "demo.yaml", "--check"]).stdout.splitlines()
    assert out[-2].endswith("packed (pack: auto; `sae-lab plan` shows the packs): OK")
    assert out[-1] == "[]"


@pytest.mark.parametrize("yaml, error", [
    ("bacth_size: 8\n", "unknown field 'bacth_size'; did you mean 'batch_size'?"),
    ("sae: {architecture: topk, sparsity_coef: 2}\n",
     "sae.sparsity_coef=2 does not apply to architecture 'topk'"),
    ("data: {synthetic: {d: 0}}\n", "data.synthetic.d=0"),
])
def test_a_bad_train_config_is_refused_without_torch(tmp_path, yaml, error):
    (tmp_path / "bad.yaml").write_text(yaml)
    proc = run_main(["train", str(tmp_path / "bad.yaml")])
    assert proc.stderr.startswith("sae-lab train: error: ") and error in proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_train_help_lists_the_config_fields_without_torch():
    proc = run_main(["train", "--help"])
    assert "sae.k: int" in proc.stdout and "data.synthetic.d: int" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "[]"
