"""Aligned uint8 crops → the float tensor a face network takes. Training and serving both call this."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def crops_to_tensor(crops: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB → (N, 3, H, W) float32, ``(x - mean) / std`` per channel."""
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) crops, got {crops.shape}")
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, 1, 1, 3)
    inv_std = 1.0 / np.asarray(std, dtype=np.float32).reshape(1, 1, 1, 3)
    return np.ascontiguousarray(((crops.astype(np.float32) - mean_arr) * inv_std).transpose(0, 3, 1, 2))
