"""Checkpoints carry their architecture (family and config) with the weights, so pruned models load without
code. An architecture that names no family is a SqueezeFaceNet (written before the other families)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pruning.models import MODEL_CARD, FaceEmbedder, create_model, saved_architecture


def save_checkpoint(path: Path, model: FaceEmbedder, **extra: object) -> None:
    """Atomic write: a crash mid-save never leaves a half checkpoint under the final name."""
    payload = {"arch": saved_architecture(model), "state_dict": model.state_dict(), **extra}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[FaceEmbedder, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = create_model(payload["arch"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload


def torch_embed_fn(model: FaceEmbedder, batch_size: int = 128):
    """Crops (N, 112, 112, 3) uint8 → unit embeddings, with the serving normalisation."""
    from service.vision.tensor import crops_to_tensor

    def embed(crops: np.ndarray) -> np.ndarray:
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                x = torch.from_numpy(crops_to_tensor(crops[start : start + batch_size], *_norm()))
                out.append(torch.nn.functional.normalize(model(x), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.embedding_dim), np.float32)

    return embed


def _norm() -> tuple[tuple[float, ...], tuple[float, ...]]:
    return MODEL_CARD["mean"], MODEL_CARD["std"]  # type: ignore[return-value]


def load_embedder_checkpoint(path: Path):
    """For ``faceverify eval --torch``: (label, FaceEmbedFn)."""
    from pruning.evaluate import crop_embedder

    model, _ = load_checkpoint(path)
    return f"torch:{path.name}", crop_embedder(torch_embed_fn(model), str(MODEL_CARD["alignment_template"]))
