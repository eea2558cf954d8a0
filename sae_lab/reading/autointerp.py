"""autointerp: explain's detection score on a seeded random sample of latents, at scale.

    sample     a permutation of all latents drawn from `seed`; the first `sample` of them that
               fire on the data (a larger sample extends a smaller one)
    ask        explain.explain_all: `concurrency` prompts in flight, `batch` latents per prompt
    cache      CACHE_DIR/KEY/LATENT.json, one file per latent, written atomically as it is done;
               KEY hashes the SAE (weights and config), the LLM's name, the data and every
               setting that changes what the LLM is shown. A rerun asks only for what is missing,
               so a killed run loses only the latents that were in flight.

The score of an SAE is the mean detection score (balanced accuracy, 0.5 = chance) over the
sampled latents that were explained; dead latents (none in a sample) and failed ones are counted
apart. `explain_dir` is `sae-lab explain`: the same run on an SAE directory and its shards, also
writing SAE_DIR/explanations.json (titles for the browser and `serve`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sae_lab.files import atomic_write_json
from sae_lab.reading import explain as prompts
from sae_lab.reading.explain import (
    EXPLANATIONS,
    Chat,
    EndpointError,
    HTTPChat,
    check_explained,
    explain_all,
    gather_evidence,
    needs_asking,
    progress,
    read_explanations,
    sample_rows,
)

if TYPE_CHECKING:
    from sae_lab.reading.contexts import TokenText
    from sae_lab.sae.base import SAE

CACHE = "autointerp"
"""The default cache directory of `sae-lab explain`, inside the SAE directory."""
SETTINGS = "settings.json"


def sae_fingerprint(sae: SAE) -> str:
    """sha256 (hex) of an SAE's class, config and state dict: the same latents, the same hash."""
    import torch

    h = hashlib.sha256(type(sae).__name__.encode())
    cfg = sae.cfg
    cfg = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else vars(cfg)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in sorted(sae.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def prompt_version() -> str:
    """Hash of the prompt texts: changing a prompt starts a new cache."""
    texts = (prompts.SYSTEM, prompts.EXPLAIN_PROMPT, prompts.DETECT_PROMPT, prompts.RETRY_NOTE,
             prompts.EXPLAIN_BATCH_PROMPT, prompts.DETECT_BATCH_PROMPT)
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def choose_latents(fires: Any, sample: int, seed: int) -> list[int]:
    """The first `sample` latents, in an order drawn from `seed`, with fires > 0."""
    import torch

    order = torch.randperm(len(fires), generator=torch.Generator().manual_seed(seed))
    alive = order[fires[order] > 0]
    return alive[:sample].tolist()


def _read(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent; a torn file cannot happen (atomic), but ask again
        return None
    return rec if isinstance(rec, dict) and "status" in rec else None


def autointerp(sae: SAE, blocks: Callable[[], Iterable[dict[str, Any]]], text: TokenText | Any,
               chat: Chat | str, *, model: str = "llama3.2", sample: int = 100,
               latents: Sequence[int] | None = None, seed: int = 0, concurrency: int = 16,
               batch: int = 1, cache_dir: str | os.PathLike | None = None, data_id: str = "",
               top: int = 10, sampled: int = 5, held_out: int = 10, context_left: int = 12,
               context_right: int = 4, max_tokens: int | None = None,
               redo_failed: bool = False, device: str = "cpu",
               probe: bool = True, say: Callable[[str], None] = lambda s: None,
               on_record: Callable[[int, dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
    """Explain and score a seeded random sample of `sample` latents that fire on the data (or
    exactly `latents`), and return the detection scores and their mean.

    `blocks()` yields activation blocks ({"acts", "token_ids", "doc"}, as shards.iter_blocks)
    and is called twice (top contexts, then random ones). `text` is a TokenText or a tokenizer.
    `chat` is a Chat or the base URL of an OpenAI-compatible API (then `model` names the model).
    With `cache_dir`, each latent's record is kept there (see the module doc); `data_id` names
    the data in the cache key (e.g. a hash of the shards' manifest). With `probe`, one short
    request checks the endpoint before the passes over the data, when a latent is to be asked.
    `on_record(latent, record)` sees each record as it is asked. Raises EndpointError (after
    keeping what was done) when the endpoint fails, NothingExplained when every latent asked
    failed.

    Returns {"mean", "n_latents", "n_scored", "n_failed", "n_dead", "n_asked", "n_cached",
    "latents", "scores" {latent: score or None}, "records" {latent: record}, "model",
    "cache" (the directory, or None)}.
    """
    from sae_lab.reading.contexts import (
        TokenText,
        TopActivations,
        check_latent,
        top_activations,
    )

    if isinstance(chat, str):
        chat = HTTPChat(chat, model)
    text = text if isinstance(text, TokenText) else TokenText(text)
    n_next = held_out // 2  # held-out contexts from just below the shown top ones
    n_random = held_out - n_next

    def top_pass() -> TopActivations:
        return top_activations(sae, blocks(), top + n_next, max_tokens=max_tokens, device=device)

    found = None
    if latents is None:
        found = top_pass()
        chosen = choose_latents(found.fires.cpu(), sample, seed)
    else:  # no pass over the data when all of them are cached
        chosen = list(dict.fromkeys(int(i) for i in latents))
        for i in chosen:
            check_latent(i, sae.d_sae)
    where: Path | None = None
    records: dict[int, dict[str, Any]] = {}
    if cache_dir is not None:
        settings = {"sae": sae_fingerprint(sae), "model": chat.name, "data": data_id,
                    "top": top, "sampled": sampled, "held_out": held_out,
                    "context_left": context_left, "context_right": context_right,
                    "max_tokens": max_tokens, "seed": seed, "prompts": prompt_version()}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        where = Path(cache_dir) / key
        where.mkdir(parents=True, exist_ok=True)
        if not (where / SETTINGS).is_file():
            atomic_write_json(where / SETTINGS, settings)
        for latent in chosen:
            rec = _read(where / f"{latent}.json")
            if rec is not None:
                records[latent] = rec
    pending = [latent for latent in chosen if needs_asking(records.get(latent), redo_failed)]
    n_cached = len(chosen) - len(pending)
    new: dict[int, dict[str, Any]] = {}
    if pending:
        try:
            if probe:  # an endpoint that is down fails here, before the passes over the data
                chat([{"role": "user", "content": "Reply with OK."}])
            if found is None:
                found = top_pass()
            # Rows for every chosen latent, not only the pending ones: a latent's random
            # contexts depend on the set drawn together, so a resumed run shows what a whole
            # run would.
            active, inactive = sample_rows(sae, blocks(), chosen,
                                           sampled + n_random + top + n_next, held_out, seed,
                                           max_tokens=max_tokens, device=device)
        except EndpointError as e:
            raise EndpointError(f"{e}; {n_cached} of {len(chosen)} latents done") from None
        pos = {latent: i for i, latent in enumerate(chosen)}
        evidence = {latent: gather_evidence(found, pos[latent], latent, active, inactive, text,
                                            top, sampled, n_random, context_left, context_right)
                    for latent in pending}

        def save(latent: int, rec: dict[str, Any]) -> None:
            rec["model"] = chat.name
            if where is not None:
                atomic_write_json(where / f"{latent}.json", rec)
            new[latent] = records[latent] = rec
            say(progress(latent, rec))
            if on_record is not None:
                on_record(latent, rec)

        try:
            explain_all(chat, evidence, save, seed, concurrency, batch)
        except EndpointError as e:
            kept = f"kept in {where}" if where is not None else "not kept (no cache_dir)"
            raise EndpointError(f"{e}; {n_cached + len(new)} of {len(chosen)} latents done, "
                                f"{kept}: a rerun asks only for the rest") from None
        check_explained(new, where if where is not None else "memory")
    return summarize(chosen, records, chat.name, len(new), n_cached, where)


def summarize(chosen: list[int], records: dict[int, dict[str, Any]], model: str, n_asked: int,
              n_cached: int, where: Path | None) -> dict[str, Any]:
    recs = {latent: records[latent] for latent in chosen}
    scores = {latent: r.get("score") for latent, r in recs.items()}
    scored = [s for s in scores.values() if s is not None]
    status = [r.get("status") for r in recs.values()]
    return {"mean": sum(scored) / len(scored) if scored else None, "n_latents": len(chosen),
            "n_scored": len(scored), "n_failed": status.count("failed"),
            "n_dead": status.count("dead"), "n_asked": n_asked, "n_cached": n_cached,
            "latents": chosen, "scores": scores, "records": recs, "model": model,
            "cache": None if where is None else str(where)}


# --- sae-lab explain ---------------------------------------------------------------------------


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


class Explained(NamedTuple):
    records: dict[str, dict[str, Any]]
    """everything in `out`, by latent"""
    latents: list[int]
    """the latents asked for"""
    out: Path
    summary: dict[str, Any]
    """what autointerp returned"""


def explain_dir(sae_dir: str | os.PathLike, shards: str, make_chat: Callable[[str], Chat], *,
                latents: str | None = None, max_latents: int = 20, sample: int | None = None,
                out: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                concurrency: int = 16, batch: int = 1, top: int = 10, sampled: int = 5,
                held_out: int = 10, context_left: int = 12, context_right: int = 4,
                max_tokens: int | None = None, redo_failed: bool = False,
                tokenizer: str | None = None, seed: int = 0, device: str = "auto",
                say: Callable[[str], None] = _stderr) -> Explained:
    """`sae-lab explain` as a function: autointerp on the SAE in `sae_dir` and `shards`, the
    latents being `latents` (like "0-19,512"), else a random `sample` of the live ones, else
    the first `max_latents`; the chat is `make_chat(device)`. Records are cached in `cache_dir`
    (default SAE_DIR/autointerp) and merged into `out` (default SAE_DIR/explanations.json) at
    the end, also when the run stops on an error."""
    from sae_lab.data.shards import iter_blocks, read_manifest
    from sae_lab.lm.attach import check_shards, load_sae_dir, load_tokenizer, resolve_device
    from sae_lab.reading.contexts import parse_latents

    device = resolve_device(device)
    sae = load_sae_dir(sae_dir, device)
    ids = None if sample is not None and latents is None else parse_latents(
        latents, sae.d_sae, max_latents)
    manifest = read_manifest(shards)
    for w in check_shards(sae, manifest, shards):
        say(f"warning: {w}")
    name = (tokenizer or manifest.get("tokenizer") or sae.metadata.get("model")
            or manifest.get("model"))
    if not name:
        raise ValueError("neither the SAE nor the shards name a model; pass --tokenizer")
    out = Path(out or Path(sae_dir) / EXPLANATIONS)
    read_explanations(out)  # a broken file is an error before the passes, not after
    data_id = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    new: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    try:
        summary = autointerp(
            sae, lambda: iter_blocks(shards), load_tokenizer(name), make_chat(device),
            sample=sample or 0, latents=ids, seed=seed, concurrency=concurrency, batch=batch,
            cache_dir=cache_dir or Path(sae_dir) / CACHE, data_id=data_id, top=top,
            sampled=sampled, held_out=held_out, context_left=context_left,
            context_right=context_right, max_tokens=max_tokens, redo_failed=redo_failed,
            device=device, say=say, on_record=new.__setitem__)
    finally:
        done = read_explanations(out)
        recs = summary.get("records", new)
        if recs:
            done.update({str(latent): rec for latent, rec in recs.items()})
            atomic_write_json(out, done)
    return Explained(done, summary["latents"], out, summary)
