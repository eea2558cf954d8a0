"""Tiny shared test assets: a text corpus, a 2-layer random GPT-2 with its own small tokenizer,
shards harvested from it, and a slightly perturbed SAE. Session fixtures over them live in
conftest.py. Nothing here reads outside the repository: the corpus is generated."""

from __future__ import annotations

from pathlib import Path

import torch

from sae_lab.sae import ARCHITECTURES, sae_config

LAYER, HOOK, CTX = 1, "resid_post", 32
# ~420k characters: enough for the largest harvest in the suite (51,200 MiniLM tokens).
CORPUS_TOKENS = 70_000


def write_corpus(path: Path, tokens: int = CORPUS_TOKENS) -> Path:
    """The test corpus: docstrings of this Python's standard library, one paragraph each (the
    demo's corpus, so a clone needs nothing beside it). Kept if `path` exists."""
    from sae_lab.assets import write_corpus as write_docstrings

    return write_docstrings(path, tokens)


def build_tiny_lm(out: Path, corpus: Path, n_embd: int = 64) -> Path:
    """A local 'model name': GPT-2 (2 layers, random weights) + a 300-token byte-level BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    text = corpus.read_text()[:100_000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    eos = fast.eos_token_id
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=n_embd, n_head=4, vocab_size=len(fast), n_positions=128,
                     bos_token_id=eos, eos_token_id=eos, initializer_range=0.1)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def write_tiny_shards(lm_dir: Path, corpus: Path, out: Path, max_tokens: int = 3000) -> Path:
    """`sae-lab harvest` of LAYER/HOOK of the tiny model over the corpus."""
    from sae_lab.data.harvest import HarvestConfig, harvest

    cfg = HarvestConfig(model=str(lm_dir), dataset=str(corpus), out=str(out),
                        layers=(LAYER,), hook=HOOK, ctx_len=CTX, batch_size=16,
                        max_tokens=max_tokens, dtype="float32", device="cpu", shard_rows=2048,
                        block_rows=1024, progress=False)
    return harvest(cfg)[LAYER]


def make_sae(d_in: int = 64, d_sae: int = 128, arch: str = "topk", seed: int = 0):
    torch.manual_seed(seed)
    kw = {"k": 8} if arch in ("topk", "batchtopk") else {}
    sae = ARCHITECTURES[arch](sae_config(arch, d_in=d_in, d_sae=d_sae, **kw)).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return sae


def identity_sae(d: int):
    """A real ReLU SAE that reconstructs exactly: x = ReLU(x) - ReLU(-x)."""
    sae = ARCHITECTURES["relu"](sae_config("relu", d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def deeper_lm(lm_dir: Path, out: Path, n_layer: int) -> Path:
    """The tiny model's tokenizer over a random GPT-2 of `n_layer` layers (for several layers)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    fast = AutoTokenizer.from_pretrained(lm_dir)
    cfg = GPT2Config.from_pretrained(lm_dir)
    cfg.n_layer = n_layer
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out
