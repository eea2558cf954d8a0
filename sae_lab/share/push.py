"""`sae-lab push DIR REPO_ID`: an SAE, or a sweep's best/, to a Hugging Face Hub model repo.

Each SAE is written in SAELens v6's layout (export.py) under its own path (the repo root for a
lone SAE, best/'s folder names for a sweep), next to a model card (README.md) and the sweep's
pareto.png, all staged in a temporary folder and sent in one commit by huggingface_hub
(`create_repo`, `upload_folder`). The token comes from HF_TOKEN or the Hugging Face login; it
is passed to huggingface_hub only, never printed or written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sae_lab.export import export_dir
from sae_lab.share.card import model_card
from sae_lab.share.hub import resolve_sae_dir
from sae_lab.share.sources import sources, training_config


def hub_token() -> str:
    """HF_TOKEN, else the saved login; a one-line error when there is neither."""
    from huggingface_hub import get_token

    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise ValueError("no Hugging Face token: set HF_TOKEN or log in (`hf auth login`)")
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ValueError(f"{repo_id!r}: not a Hub repo id (expected OWNER/NAME)") from None
    if "/" not in repo_id:
        raise ValueError(f"{repo_id!r}: not a Hub repo id (expected OWNER/NAME)")


def check_push(repo_id: str) -> str:
    """The token for a push to `repo_id`, checked before any work: a one-line ValueError for a
    malformed repo id or a missing token."""
    check_repo_id(repo_id)
    return hub_token()


def stage(path: str, repo_id: str, out: Path) -> list[str]:
    """Write what `push` uploads into `out`; returns the SAE paths in the repo."""
    found = sources(path)
    entries: list[tuple[str, Any, dict[str, Any]]] = []
    for src in found.saes:
        local = resolve_sae_dir(src.directory)
        _, sae, _ = export_dir(local, out / src.name if src.name else out / "_sae")
        entries.append((src.name, sae, src.metrics))
    if not found.is_sweep:  # a lone SAE at the repo root
        for f in (out / "_sae").iterdir():
            f.rename(out / f.name)
        (out / "_sae").rmdir()
    pareto = None
    if found.pareto is not None:
        shutil.copyfile(found.pareto, out / "pareto.png")
        pareto = "pareto.png"
    config = training_config(found.saes[0].directory) if not path.startswith("hf://") else None
    (out / "README.md").write_text(model_card(repo_id, entries, pareto, config))
    return [e[0] or "." for e in entries]


def push(path: str, repo_id: str, private: bool = False, revision: str | None = None,
         commit_message: str | None = None) -> tuple[str, list[str]]:
    """Upload the SAE(s) `path` names to `repo_id`; returns (the commit's URL, SAE paths)."""
    token = check_push(repo_id)
    with tempfile.TemporaryDirectory(prefix="sae_lab_push_") as tmp:
        staged = Path(tmp) / "repo"
        paths = stage(path, repo_id, staged)
        message = commit_message or f"sae_lab: {len(paths)} SAE(s)"
        url = _upload(staged, repo_id, token, private, revision, message)
    return url, paths


def _upload(folder: Path, repo_id: str, token: str, private: bool, revision: str | None,
            message: str) -> str:
    """create_repo (kept when it exists), the branch, then one commit of `folder`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, revision=revision,
                                 commit_message=message)
    except HfHubHTTPError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OSError(f"push to {repo_id}: {first}") from None
    return str(info.commit_url)
