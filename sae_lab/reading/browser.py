"""A static feature browser: one self-contained index.html, opened from disk, no server.

The latent records (density, top contexts, promoted tokens) are embedded as JSON; a little
vanilla JS lists the latents, filters them from a search box (a latent index, or text found in
its contexts and promoted tokens) and shows one panel per latent. `#latent=5` and `#q=text` in the
URL select a latent or a search on load. Token text is inserted with textContent only, so
arbitrary corpus text cannot inject markup.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from sae_lab.files import atomic_dir, check_output_dir

INDEX = "index.html"
BROWSER_FILES = (INDEX,)  # what an earlier `sae-lab inspect` left in --out

TEMPLATES = "templates"  # package data beside this module: the pages, their CSS and JS


@functools.cache
def _jinja() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("sae_lab.reading", TEMPLATES),
                              autoescape=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined)


def asset(name: str) -> Any:
    """templates/NAME (this package's own CSS or JS) as markup, to inline in a page."""
    from markupsafe import Markup

    return Markup(resources.files(__package__).joinpath(TEMPLATES, name).read_text("utf-8"))


def render_page(template: str, **context: Any) -> str:
    """templates/TEMPLATE rendered: strings in `context` are escaped, markup (assets) is not."""
    return _jinja().get_template(template).render(**context)


def render_html(latents: list[dict[str, Any]], summary: str, title: str = "sae_lab features",
                sae_sha256: str | None = None) -> str:
    """The whole page as one string: templates/browser.html with its CSS, JS and the data
    inlined, so the page is one self-contained file."""
    from markupsafe import Markup

    data: dict[str, Any] = {"summary": summary, "latents": latents}
    if sae_sha256:
        data["sae_sha256"] = sae_sha256
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # Any "<" could start "</script>" or "<!--" (which changes how the HTML parser ends the
    # script element); "\\u003c" is the same JSON string and holds no markup.
    payload = payload.replace("<", "\\u003c")
    return render_page("browser.html", title=title, payload=Markup(payload),
                       errors_js=asset("errors.js"), css=asset("browser.css"),
                       js=asset("browser.js"))


def write_browser(latents: list[dict[str, Any]], out: str | os.PathLike, summary: str,
                  title: str = "sae_lab features", sae_sha256: str | None = None) -> Path:
    """Write out/index.html atomically (a temporary directory, then rename over `out`); an
    existing `out` is replaced only when it is an earlier browser. `sae_sha256` (sae_hash of the
    SAE the contexts are of) lets `sae-lab serve --inspect` check it serves that SAE."""
    with atomic_dir(out, "inspect", known=BROWSER_FILES) as tmp:
        (tmp / INDEX).write_text(render_html(latents, summary, title, sae_sha256),
                                 encoding="utf-8")
    return Path(out) / INDEX


def sae_hash(sae_dir: str | os.PathLike) -> str:
    """sha256 (hex) of an SAE directory's weights file: which SAE a browser's contexts are of."""
    from sae_lab.sae.base import WEIGHTS_FILE

    digest = hashlib.sha256()
    with open(Path(sae_dir) / WEIGHTS_FILE, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_browser_data(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(index.html, its embedded data) of an `sae-lab inspect` output (a directory or its
    index.html); one-line errors for anything else."""
    index = Path(path) / INDEX if Path(path).is_dir() else Path(path)
    if not index.is_file():
        raise FileNotFoundError(f"{path}: no {INDEX} (not an `sae-lab inspect` output)")
    m = re.search(r'<script id="data" type="application/json">(.*?)</script>',
                  index.read_text(encoding="utf-8"), re.S)
    try:
        data = json.loads(m.group(1)) if m else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("latents"), list):
        raise ValueError(f"{index}: no latent data (not an `sae-lab inspect` output)")
    return index, data


def feature_browser(sae_dir: str | os.PathLike, shards: str | os.PathLike,
                    out: str | os.PathLike, *, model: str | None = None,
                    latents: str | None = None, max_latents: int = 1000, top: int = 10,
                    context_left: int = 12, context_right: int = 4,
                    top_logits: int | None = None, max_tokens: int | None = None,
                    batch_size: int = 4096, device: str = "auto",
                    progress: bool = True) -> Path:
    """`sae-lab inspect` as a function (the flags are its arguments); returns OUT/index.html."""
    from sae_lab.data.shards import iter_blocks, read_manifest
    from sae_lab.lm.attach import check_shards, load_sae_dir, load_tokenizer, resolve_device
    from sae_lab.reading.contexts import TokenText, latent_records, parse_latents, top_activations

    check_output_dir(out, "inspect", BROWSER_FILES)  # before minutes of work, not after
    device = resolve_device(device)
    sae = load_sae_dir(sae_dir, device)
    manifest = read_manifest(shards)
    for w in check_shards(sae, manifest, shards):
        print(f"warning: {w}", file=sys.stderr)
    ids = parse_latents(latents, sae.d_sae, max_latents)
    name = model or sae.metadata.get("model") or manifest.get("model")
    if not name:
        raise ValueError("neither the SAE nor the shards name a model; pass --model")
    tokenizer = load_tokenizer(model or manifest.get("tokenizer") or name)

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr)

    promoted = None
    if top_logits != 0:
        say("loading the model for the promoted-token view (--top-logits 0 skips it)")
        promoted = _promoted(sae, name, device, top_logits)
    total = manifest.get("tokens") or None
    if max_tokens and total:
        total = min(total, max_tokens)
    found = top_activations(sae, _counted(iter_blocks(shards), total, progress), top, batch_size,
                            max_tokens, device)
    say(f"writing contexts of {len(ids)} latents")
    records = latent_records(found, ids, TokenText(tokenizer), context_left, context_right,
                             promoted)
    from sae_lab.reading.explain import EXPLANATIONS, attach_titles

    attach_titles(records, Path(sae_dir) / EXPLANATIONS)  # from `sae-lab explain`, if run
    meta = sae.metadata
    summary = (f"{sae.cfg.architecture} SAE, {sae.d_sae} latents on d_in={sae.d_in}; model "
               f"{name}, layer {meta.get('layer', manifest.get('layer'))} "
               f"{meta.get('hook', manifest.get('hook'))}; {found.n_rows} tokens from "
               f"{shards}; showing {len(ids)} latents")
    return write_browser(records, out, summary, title=f"sae_lab: {Path(sae_dir).name}",
                         sae_sha256=sae_hash(sae_dir))


def _promoted(sae: Any, name: str, device: str, top_logits: int | None) -> Any:
    """The output tokens each latent promotes most (W_dec @ W_U), or None when the model has no
    unembedding and the user did not ask for the view explicitly."""
    from sae_lab.lm.attach import load_model, promoted_tokens, unembedding_for

    lm = load_model(name, device)
    try:
        W_U = unembedding_for(lm, sae.d_in, name)
    except ValueError as e:
        if top_logits is not None:
            raise
        print(f"note: {e}; skipping the promoted-token view", file=sys.stderr)
        return None
    return promoted_tokens(sae.W_dec, W_U, top_logits or 10)


def _counted(blocks: Iterator[dict[str, Any]], total: int | None, show: bool
             ) -> Iterator[dict[str, Any]]:
    """The blocks unchanged, with a progress bar over their rows on stderr."""
    from tqdm.auto import tqdm

    from sae_lab.progress import bar_wanted

    with tqdm(total=total, unit="tok", unit_scale=True, dynamic_ncols=True, desc="inspect",
              file=sys.stderr, disable=not (show and bar_wanted())) as bar:
        for block in blocks:
            n = block["acts"].shape[0]
            bar.update(n if total is None else min(n, total - bar.n))
            yield block
