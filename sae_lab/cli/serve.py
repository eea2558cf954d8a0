"""Serves a small web app on 127.0.0.1 only: type text and see each token highlighted by the
selected latent's activation, the top latents of the text with their titles and explanations (from
`sae-lab explain`) and their top contexts (from an `sae-lab inspect` output, with --inspect).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sae_lab.cli.args import add_hook_args, add_sae_dir, command, int_at_least, open_lm


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = command(sub, "serve", __doc__)
    add_sae_dir(p)
    p.add_argument("--port", type=int_at_least(0), default=8000,
                   help="port on 127.0.0.1 (0: any free one)")
    p.add_argument("--inspect", help="an `sae-lab inspect` output directory, for top contexts")
    p.add_argument("--explanations", help="explanations JSON (default: SAE_DIR/"
                   "explanations.json when it exists)")
    p.add_argument("--top-k", type=int_at_least(1), default=5, help="latents listed per token")
    p.add_argument("--max-length", type=int_at_least(2), default=256,
                   help="tokens analysed per text")
    p.add_argument("--model", help="model (default: the SAE's)")
    add_hook_args(p)
    return p


def run(args: argparse.Namespace) -> None:
    from sae_lab.lm.attach import load_lm
    from sae_lab.reading.serve import Viewer, read_inspect_contexts, read_notes, serve

    # the browser's contexts must be this SAE's: checked before any model loads
    contexts = read_inspect_contexts(args.inspect, args.sae_dir) if args.inspect else {}
    notes = read_notes(args.sae_dir, args.explanations)
    sae, device, layer, hook, name = open_lm(args)
    model, tokenizer = load_lm(name, device)
    viewer = Viewer(model, tokenizer, sae, layer, hook, notes, contexts, args.top_k,
                    args.max_length)
    print(f"{sae.d_sae} latents; {len(notes)} explained, {len(contexts)} with contexts",
          file=sys.stderr)
    try:
        serve(viewer, args.port, f"sae_lab: {Path(args.sae_dir).name}")
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
