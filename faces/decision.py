"""A score against a variant's calibrated threshold: the match decision every caller makes the same way."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faces.embed import Embedder


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two unit vectors (the embedder normalises), clipped against float drift."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


def is_match(score: float, threshold: float) -> bool:
    """At or above the threshold is a match: the rule thresholds are calibrated for (FMR on impostors)."""
    return score >= threshold


@dataclass(frozen=True)
class Decision:
    score: float
    threshold: float
    match: bool


def verify(embedder: Embedder, a: np.ndarray, b: np.ndarray, target_fmr: str = "1e-3") -> Decision:
    """Two embeddings of ``embedder`` → same person at the variant's threshold for ``target_fmr``?"""
    score = cosine(a, b)
    threshold = embedder.threshold(target_fmr)
    return Decision(score=score, threshold=threshold, match=is_match(score, threshold))


def accepted(embedder: Embedder, score: float, target_fmr: str = "1e-3") -> bool:
    """Whether a gallery candidate with ``score`` counts as a match (identify)."""
    return is_match(score, embedder.threshold(target_fmr))
