import functools
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`-n 2`) each worker gets one core's worth of threads.
torch.set_num_threads(
    1 if os.environ.get("PYTEST_XDIST_WORKER")
    else min(2, torch.get_num_threads())
)

# Files whose tests start Ray (in process, in a subprocess or in a notebook kernel). With
# `-n 2 --dist loadgroup` they all run on one worker, one after another, as in a serial run: two
# Ray instances on two cores would starve each other's trials (one group per file measured no
# faster: 505 s against 489 s for the suite).
RAY_FILES = {"test_sweep.py", "test_sweep_faults.py", "test_cluster_recipe.py", "test_demo.py",
             "test_kaggle.py", "test_notebook.py"}


def pytest_configure(config: pytest.Config) -> None:
    # xdist's loadgroup groups by a suffix it writes into each item's `_nodeid`. A pytest that keeps
    # the id elsewhere (9.2) loses the write, and every group is spread over the workers without a
    # word: Ray tests run two at a time and each family pack is trained once per worker. Stop.
    import inspect

    from _pytest.nodes import Node

    if config.getvalue("dist") == "loadgroup" and \
            "_nodeid" not in inspect.getsource(Node.nodeid.fget):
        raise pytest.UsageError(f"pytest-xdist's --dist loadgroup has no effect under pytest "
                                f"{pytest.__version__}: install pytest<9.2 (pyproject's dev extra)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in RAY_FILES:
            item.add_marker(pytest.mark.xdist_group("ray"))


# Session fixtures over tests/tiny.py: built once, shared by the tests that need them.
@functools.cache
def _corpus(base: Path) -> Path:
    from helpers.tiny import write_corpus

    return write_corpus(base / "corpus.txt")


@functools.cache
def _tiny_lm(base: Path) -> Path:
    from helpers.tiny import build_tiny_lm

    return build_tiny_lm(base / "tiny-gpt2", _corpus(base))


@functools.cache
def _tiny_shards(base: Path) -> Path:
    from helpers.tiny import write_tiny_shards

    return write_tiny_shards(_tiny_lm(base), _corpus(base), base / "tiny-acts")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A ~420 kB text file (stdlib docstrings, one paragraph each), generated once a session."""
    return _corpus(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return _tiny_lm(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    return _tiny_shards(tmp_path_factory.getbasetemp())
