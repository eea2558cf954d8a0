import functools
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    assert path.is_file(), f"test data missing: {path} (CI has ../shared beside the checkout)"
    return path


# Session fixtures over tests/tiny.py: built once, shared by the eval/inspect/steer tests.
@functools.cache
def _tiny_lm(base: Path) -> Path:
    from tiny import build_tiny_lm

    return build_tiny_lm(base / "tiny-gpt2")


@functools.cache
def _tiny_shards(base: Path) -> Path:
    from tiny import write_tiny_shards

    return write_tiny_shards(_tiny_lm(base), base / "tiny-acts")


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return _tiny_lm(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    return _tiny_shards(tmp_path_factory.getbasetemp())
