"""autointerp: `explain`'s detection score (sae_lab.reading.autointerp) on a random sample of
latents, against an OpenAI-compatible chat endpoint.

    latents    `n` latents drawn with the bench's seed among those that fire on the shards
    score      each latent explained from its top contexts, then scored by detection: balanced
               accuracy of the LLM picking held-out activating contexts out of a shuffled mix
    autointerp the mean score over the latents scored (one cached record per latent under
               OUT/autointerp/<sae>/: a second run asks only for the latents missing; requests
               run concurrently, `concurrency` in flight)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

NEEDS_ENDPOINT = "autointerp needs an endpoint (--endpoint)"


def detection_score(sae_dir: str, shards: str, endpoint: str | None, llm: str, n: int,
                    d_sae: int, out: Path, seed: int = 0, api_key: str | None = None,
                    device: str = "cpu", concurrency: int = 16, retries: int = 3
                    ) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, details) of the autointerp task; a ValueError naming the missing endpoint, an
    EndpointError (an OSError) once a request failed `retries` + 1 times. `out` is the
    explanations file; its cache sits beside it."""
    if not endpoint:
        raise ValueError(NEEDS_ENDPOINT)
    from sae_lab.reading.autointerp import explain_dir
    from sae_lab.reading.explain import HTTPChat

    def chat(_device: str) -> HTTPChat:
        return HTTPChat(endpoint, llm, api_key, retries=retries)

    found = explain_dir(sae_dir, shards, chat, sample=min(n, d_sae), out=out,
                        cache_dir=out.with_suffix(""), seed=seed, device=device,
                        concurrency=concurrency,
                        say=lambda _s: None)
    latents = found.latents
    scores = [found.records[str(i)]["score"] for i in latents
              if found.records.get(str(i), {}).get("score") is not None]
    if not scores:
        raise ValueError(f"autointerp: none of {len(latents)} latents was scored (see {out})")
    return ({"autointerp": sum(scores) / len(scores)},
            {"latents": latents, "scored": len(scores), "records": str(out)})
