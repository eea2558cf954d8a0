"""A Hugging Face Hub cache built by hand (the layout huggingface_hub reads offline), and SAE
folders in other libraries' layouts, for the tests of sae_lab.share."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from sae_lab.sae.base import SAE

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(cache: Path, repo_id: str, source: Path, path: str = "",
              revision: str = "main") -> Path:
    """Put `source`'s files at `path` of repo `repo_id` in the Hub cache `cache`:
    models--OWNER--NAME/refs/REVISION and snapshots/COMMIT/PATH/..."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT / path
    shutil.copytree(source, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(COMMIT)
    return cache


def offline_hub(monkeypatch, cache: Path, sae_lab_cache: Path) -> None:
    """Read the Hub from `cache` only (HF_HUB_OFFLINE=1), convert into `sae_lab_cache`."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("SAE_LAB_CACHE", str(sae_lab_cache))


def sparsify_folder(sae: SAE, out: Path) -> Path:
    """A TopK SAE in sparsify's layout: cfg.json + sae.safetensors (encoder.weight [d_sae, d_in],
    encoder.bias, W_dec, b_dec)."""
    out.mkdir(parents=True)
    cfg = {"expansion_factor": sae.d_sae // sae.d_in, "normalize_decoder": True,
           "num_latents": sae.d_sae, "k": sae.cfg.k, "multi_topk": False,
           "skip_connection": False, "d_in": sae.d_in}
    (out / "cfg.json").write_text(json.dumps(cfg))
    tensors = {"encoder.weight": sae.W_enc.detach().T.contiguous(),
               "encoder.bias": sae.b_enc.detach().clone(), "W_dec": sae.W_dec.detach().clone(),
               "b_dec": sae.b_dec.detach().clone()}
    save_file(tensors, out / "sae.safetensors")
    return out


def max_diff(a: SAE, b: SAE, d_in: int, seed: int = 1) -> float:
    """Largest difference of the reconstructions (and codes) of a and b on random inputs."""
    torch.manual_seed(seed)
    x = 2 * torch.randn(64, d_in)
    with torch.no_grad():
        return max(float((a.encode(x) - b.encode(x)).abs().max()),
                   float((a(x) - b(x)).abs().max()))


def fake_sweep(out: Path, saes: dict[str, SAE]) -> Path:
    """A sweep output directory as report.py writes it (results.csv, pareto.png, best/<name>/
    and best/summary.json), made by hand from `saes`."""
    best = out / "best"
    best.mkdir(parents=True)
    summary = {}
    for i, (name, sae) in enumerate(saes.items()):
        sae.save(best / name)
        summary[name] = {"trial": f"{sae.name}_{i}", "architecture": sae.name, "l0": 8.0,
                         "fvu": 0.5}
    (best / "summary.json").write_text(json.dumps(summary))
    (out / "results.csv").write_text("trial,architecture\n" + "".join(
        f"{r['trial']},{r['architecture']}\n" for r in summary.values()))
    (out / "pareto.png").write_bytes(b"\x89PNG\r\n\x1a\n fake")
    (out / "config.yaml").write_text("sae:\n  architecture: topk\n")
    return out
