"""The `precision` a run trains in, resolved for the device it runs on.

    auto        CPU: 32. CUDA: bf16-mixed on cards with bfloat16 (compute capability 8+: A100,
                L4, H100), 16-mixed on older ones (T4, V100), whose tensor cores have float16 only.
    32          float32 everywhere.
    16-mixed    float16 autocast with a gradient scaler (the loss is scaled before backward so
                small float16 gradients do not flush to zero; steps with inf gradients are
                skipped and the scale lowered). On CPU it runs with torch's CPU float16 autocast.
    bf16-mixed  bfloat16 autocast, no scaler (bfloat16 has float32's range). CUDA only: on CPU
                the run trains in float32.

Parameters, Adam's moments and the loss stay float32 in every mode; the sparse kernels
(sae_lab.sae.sparse) turn autocast off and compute in float32.
"""

from __future__ import annotations

from typing import Any

import torch

PRECISIONS = ("auto", "32", "16-mixed", "bf16-mixed")


def resolve(precision: str, accelerator: str, device: int = 0) -> str:
    """Lightning's precision name for `precision` on accelerator "gpu" or "cpu"."""
    if precision == "32":
        return "32-true"
    if accelerator != "gpu":
        return "16-mixed" if precision == "16-mixed" else "32-true"
    if precision == "auto":
        major, _ = torch.cuda.get_device_capability(device)
        return "bf16-mixed" if major >= 8 else "16-mixed"
    return precision


def trainer_precision(precision: str, accelerator: str) -> dict[str, Any]:
    """Trainer keyword arguments (precision, plugins) for `precision`. Lightning swaps 16-mixed
    for bf16-mixed on CPU; here CPU float16 autocast runs with a CPU gradient scaler instead."""
    name = resolve(precision, accelerator)
    if name == "16-mixed" and accelerator != "gpu":
        from pytorch_lightning.plugins.precision import MixedPrecision

        plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
        return {"precision": None, "plugins": [plugin]}
    return {"precision": name, "plugins": []}


def fused_adam(trainer: Any) -> bool:
    """Fused Adam unscales gradients inside its kernel, so clipping (which needs them unscaled
    first) refuses it under a gradient scaler: 16-mixed takes the foreach Adam."""
    return trainer is None or getattr(trainer, "precision", "32-true") != "16-mixed"


def scaler(trainer: Any) -> Any:
    """The trainer's gradient scaler (16-mixed), else None."""
    return getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
