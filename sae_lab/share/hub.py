"""SAEs from the Hugging Face Hub (or a foreign-layout folder) as sae_lab SAE directories.

    resolve_sae_dir("runs/demo/sae")                      -> itself (an sae_lab SAE directory)
    resolve_sae_dir("hf://owner/name")                    -> the repo's one SAE
    resolve_sae_dir("hf://owner/name/blocks.3.hook_resid_post@v1")   a folder of it, a revision

Files come through huggingface_hub's cache (`snapshot_download`), so HF_HUB_OFFLINE=1 reads a
repo downloaded before, and HF_HOME / HF_HUB_CACHE say where the cache is. A folder in SAELens's
or sparsify's layout is converted once (layouts.py) into an sae_lab SAE directory under
$SAE_LAB_CACHE (default ~/.cache/sae_lab)/converted/, keyed by the source files, and that
directory is returned: every command that opens an SAE directory reads it unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import NamedTuple

from sae_lab.share.layouts import layout_of, load_folder, pick_sae_folder

PREFIX = "hf://"
# What a download of one SAE needs: configs, weights (and a card for people).
PATTERNS = ("*.json", "*.safetensors", "*.md")
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class HubSpec(NamedTuple):
    repo_id: str
    path: str
    """The folder in the repo ("" for its root)."""
    revision: str | None


def parse_spec(spec: str) -> HubSpec:
    """hf://REPO_ID[/PATH][@REVISION] -> its parts; a one-line ValueError for a malformed one."""
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    body, at, revision = body.partition("@")
    parts = [p for p in body.split("/") if p]
    repo_id = "/".join(parts[:2])
    if len(parts) < 2 or not _REPO.fullmatch(repo_id) or ".." in parts or (at and not revision):
        raise ValueError(f"{spec}: not a Hub SAE (expected hf://OWNER/NAME[/PATH][@REVISION])")
    return HubSpec(repo_id, "/".join(parts[2:]), revision or None)


def is_hub_spec(spec: str | os.PathLike) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def cache_root() -> Path:
    return Path(os.environ.get("SAE_LAB_CACHE") or Path.home() / ".cache" / "sae_lab")


def download(spec: HubSpec, name: str) -> Path:
    """The local folder of `spec` (its path in the snapshot), through the Hub cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    prefix = f"{spec.path}/" if spec.path else ""
    try:
        root = snapshot_download(spec.repo_id, revision=spec.revision,
                                 allow_patterns=[prefix + p for p in PATTERNS] +
                                 ([f"{prefix}**/{p}" for p in PATTERNS] if prefix else []))
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OSError(f"{name}: cannot download from the Hub ({first})") from None
    folder = Path(root) / spec.path
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: no folder {spec.path!r} in {spec.repo_id}")
    return folder


def resolve_sae_dir(spec: str | os.PathLike) -> Path:
    """An sae_lab SAE directory for `spec`: a local directory, or hf://REPO_ID[/PATH][@REV];
    foreign layouts converted (and cached). A local path that is no SAE folder is returned as
    it is, for the command to report."""
    name = str(spec)
    if is_hub_spec(name):  # copied out of the Hub cache even in sae_lab's layout: commands
        return converted(pick_sae_folder(download(parse_spec(name), name), name))  # write there
    folder = Path(spec)
    if not folder.is_dir() or layout_of(folder) in (None, "sae_lab"):
        return folder
    return converted(folder)


def converted(folder: Path) -> Path:
    """`folder` (any layout) saved as an sae_lab SAE directory, once per content."""
    target = cache_root() / "converted" / _content_key(folder)
    if not (target / "cfg.json").is_file():
        load_folder(folder).save(target)
    return target


def _content_key(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:24]
