"""The model card (README.md) of a `sae-lab push`: what each SAE is, its held-out metrics, and
how to load it with sae_lab and with SAELens."""

from __future__ import annotations

from typing import Any

from sae_lab.sae.base import SAE

METRICS = ("l0", "fvu", "cos", "dead_frac", "l2_ratio", "ce_loss_score", "tokens")


def model_card(repo_id: str, entries: list[tuple[str, SAE, dict[str, Any]]],
               pareto: str | None, config: str | None) -> str:
    """README.md for `entries` ((path in repo, SAE, metrics)), the sweep's Pareto plot file name
    and the training config (YAML text) when known."""
    first = entries[0][1]
    model = first.metadata.get("model")
    lines = ["---", "library_name: saelens", "tags:", "- sparse-autoencoder", "- sae_lab",
             "- saelens"]
    if model:
        lines += [f"base_model: {model}"] if "/" in str(model) else []
    lines += ["---", "", f"# {repo_id}", "",
              f"{len(entries)} sparse autoencoder(s) trained with sae_lab, in SAELens v6's "
              "layout (cfg.json, sae_weights.safetensors, sparsity.safetensors).", ""]
    lines += _table(entries)
    if pareto:
        lines += ["", "## Sparsity against reconstruction", "", f"![Pareto plot]({pareto})"]
    lines += _loading(repo_id, entries[0][0])
    if config:
        lines += ["", "## Training config", "", "```yaml", config.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _table(entries: list[tuple[str, SAE, dict[str, Any]]]) -> list[str]:
    head = ["path", "architecture", "d_in", "d_sae", "model", "layer", "hook", *METRICS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path, sae, metrics in entries:
        meta = sae.metadata
        cells = [path or "(root)", sae.name, sae.d_in, sae.d_sae, meta.get("model", ""),
                 meta.get("layer", ""), meta.get("hook", "")]
        cells += [_fmt(metrics.get(m)) for m in METRICS]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return ["## SAEs", "", "Held-out metrics (n/a: not measured):", "", *rows]


def _fmt(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.4g}"
    return "n/a" if v in (None, "") else str(v)


def _loading(repo_id: str, path: str) -> list[str]:
    spec = f"hf://{repo_id}" + (f"/{path}" if path else "")
    where = f'root + "/{path}"' if path else "root"
    return ["", "## Loading", "", "With sae_lab (any command that takes an SAE directory):", "",
            "```bash", f"sae-lab eval {spec} --shards SHARDS", "```", "",
            "```python", "from sae_lab.share.hub import resolve_sae_dir",
            "from sae_lab.lm.attach import load_sae_dir",
            f'sae = load_sae_dir(resolve_sae_dir("{spec}"))', "```", "",
            "With SAELens (v6):", "", "```python", "from huggingface_hub import snapshot_download",
            "from sae_lens import SAE", f'root = snapshot_download("{repo_id}")',
            f"sae = SAE.load_from_disk({where})", "```"]
