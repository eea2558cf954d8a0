"""Run the SAE's model on each text, encode the activation at the SAE's hook, and print the top
latents of each token and of the whole text (by largest activation, with the number of tokens it
fires on), as a table or JSON. Titles from SAE_DIR/explanations.json are shown when present.
"""

from __future__ import annotations

import argparse
import json
import sys

from sae_lab.cli.args import add_hook_args, add_sae_dir, command, int_at_least, open_lm


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "features", __doc__)
    add_sae_dir(p)
    p.add_argument("--prompt", action="append", help="a text; repeat for several")
    p.add_argument("--file", help="a text file, one text a line")
    p.add_argument("--model", help="model / tokenizer (default: the SAE's)")
    p.add_argument("--top", type=int_at_least(1), default=5, help="latents per token")
    p.add_argument("--top-text", type=int_at_least(1), default=10,
                   help="latents over the whole text")
    p.add_argument("--latents", help="report only these latents, e.g. 0-99,512")
    p.add_argument("--keep-special", action="store_true",
                   help="also report special tokens ([CLS], [SEP], ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    add_hook_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.lm.attach import load_model, load_tokenizer
    from sae_lab.reading.contexts import parse_latents
    from sae_lab.reading.features import (
        features_json,
        format_features,
        load_titles,
        read_prompts,
        text_features,
    )

    texts = read_prompts(args.prompt, args.file)
    sae, device, layer, hook, name = open_lm(args)
    latents = parse_latents(args.latents, sae.d_sae) if args.latents else None
    titles = load_titles(args.sae_dir)
    model, tokenizer = load_model(name, device), load_tokenizer(name)
    found = text_features(model, tokenizer, sae, texts, layer, hook, args.top, args.top_text,
                          latents, titles, args.keep_special)
    if args.json:
        json.dump(features_json(found), sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print(format_features(found), end="")
