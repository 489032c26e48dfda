"""Threshold calibration and checkpoint scoring on the identity-labelled validation split (never LFW)."""

from __future__ import annotations

import numpy as np


def pair_scores(embeddings: np.ndarray, identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every genuine pair and every impostor pair among unit ``embeddings``."""
    sims = embeddings @ embeddings.T
    upper = np.triu_indices(len(embeddings), k=1)
    same = identity[upper[0]] == identity[upper[1]]
    scores = sims[upper]
    return scores[same], scores[~same]


def calibrate(embeddings: np.ndarray, identity: np.ndarray, fmrs: tuple[float, ...] = (1e-3, 1e-4)) -> dict:
    """Thresholds at target false-match rates, TAR there, and EER."""
    genuine, impostor = pair_scores(embeddings, identity)
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError(
            "calibration needs genuine and impostor pairs: at least two identities, one repeated"
        )
    result: dict[str, object] = {"n_genuine": int(genuine.size), "n_impostor": int(impostor.size)}
    thresholds = {}
    for fmr in fmrs:
        if impostor.size * fmr < 10:  # too few impostor pairs to estimate this rate
            continue
        threshold = float(np.quantile(impostor, 1 - fmr))
        key = f"{fmr:.0e}".replace("e-0", "e-")
        thresholds[key] = threshold
        result[f"tar_at_fmr_{key}"] = float(np.mean(genuine > threshold))
    result["thresholds"] = thresholds
    # EER: where the false-reject and false-accept rates cross
    grid = np.quantile(np.concatenate([genuine, impostor]), np.linspace(0, 1, 2001))
    frr = np.searchsorted(np.sort(genuine), grid) / genuine.size
    far = 1 - np.searchsorted(np.sort(impostor), grid) / impostor.size
    crossing = int(np.argmin(np.abs(frr - far)))
    result["eer"] = float((frr[crossing] + far[crossing]) / 2)
    return result
