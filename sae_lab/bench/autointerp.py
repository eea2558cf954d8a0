"""autointerp: `explain`'s detection score (sae_lab.reading.explain) on a random sample of
latents, against an OpenAI-compatible chat endpoint.

    latents    `n` latents drawn with the bench's seed among the SAE's d_sae
    score      each latent explained from its top contexts, then scored by detection: balanced
               accuracy of the LLM picking held-out activating contexts out of a shuffled mix
    autointerp the mean score over the latents scored (explain's records, cached in
               OUT/autointerp/<sae>.json: a second run asks only for the latents missing)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

NEEDS_ENDPOINT = "autointerp needs an endpoint (--endpoint)"


def sample_latents(d_sae: int, n: int, seed: int = 0) -> list[int]:
    return sorted(random.Random(seed).sample(range(d_sae), min(n, d_sae)))


def detection_score(sae_dir: str, shards: str, endpoint: str | None, llm: str, n: int,
                    d_sae: int, out: Path, seed: int = 0, api_key: str | None = None,
                    device: str = "cpu") -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, details) of the autointerp task; a ValueError naming the missing endpoint."""
    if not endpoint:
        raise ValueError(NEEDS_ENDPOINT)
    from sae_lab.reading.explain import HTTPChat, explain_dir

    latents = sample_latents(d_sae, n, seed)
    found = explain_dir(sae_dir, shards, lambda _device: HTTPChat(endpoint, llm, api_key),
                        latents=",".join(map(str, latents)), out=out, seed=seed, device=device,
                        say=lambda _s: None)
    scores = [found.records[str(i)]["score"] for i in latents
              if found.records.get(str(i), {}).get("score") is not None]
    if not scores:
        raise ValueError(f"autointerp: none of {len(latents)} latents was scored (see {out})")
    return ({"autointerp": sum(scores) / len(scores)},
            {"latents": latents, "scored": len(scores), "records": str(out)})
