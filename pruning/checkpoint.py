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
    from faces.tensor import crops_to_tensor

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
    from faces.evaluation import crop_embedder

    model, _ = load_checkpoint(path)
    return f"torch:{path.name}", crop_embedder(torch_embed_fn(model), str(MODEL_CARD["alignment_template"]))


# ---- published variants as starting points --------------------------------------------------------
WEIGHTS_ROLE = "weights"  # the store artifact holding a variant's PyTorch weights (weights_payload)
# Payload keys a published weights file keeps: enough to fine-tune or prune again (no optimiser state).
_WEIGHT_KEYS = ("arch", "state_dict", "criterion", "level", "record", "dense")


def weights_payload(payload: dict) -> dict:
    """The slim payload published beside a variant's ONNX: architecture, weights, targets' space, lineage."""
    meta = payload.get("meta", {})
    slim_meta = {k: meta[k] for k in ("target_mean", "config", "data", "prune_config") if k in meta}
    return {k: payload[k] for k in _WEIGHT_KEYS if k in payload} | {"meta": slim_meta}


def save_weights(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(weights_payload(payload), tmp)
    os.replace(tmp, path)


def materialise(
    spec: str | Path, out_dir: Path, *, crops_root: Path | None = None, store_root: Path | None = None
) -> Path:
    """A checkpoint file for ``spec``: an existing path as it is, or a published variant (``name@version`` or
    alias) written to ``out_dir``: its ``weights`` artifact (verified like every artifact), or, for variants
    published before weights were kept, weights rebuilt from its one-pass ONNX graph (pruning.recover, on
    the first training crops of ``crops_root``)."""
    import io

    from model_store import DEFAULT_ROOT, ModelStore

    path = Path(spec)
    if path.exists():
        return path
    store = ModelStore(store_root or DEFAULT_ROOT)
    manifest = store.manifest(str(spec))  # raises UnknownModel with the refs it knows
    target = out_dir / f"from-{manifest.name}@{manifest.version}.pt"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    if WEIGHTS_ROLE in manifest.artifacts:
        _, data = store.load(manifest.ref, role=WEIGHTS_ROLE)
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    else:
        if (manifest.architecture or {}).get("flip_fusion"):
            raise ValueError(f"{manifest.ref} has no weights artifact; rebuild from its one-pass parent")
        if crops_root is None:
            raise ValueError(f"{manifest.ref} has no weights artifact; rebuilding it needs training crops")
        from pruning.data.faceset import held_out, load_faceset
        from pruning.recover import model_from_onnx

        _, onnx_bytes = store.load(manifest.ref)
        crops = load_faceset(crops_root, teacher=None, keep=lambda i: not held_out(i), limit=512).crops
        model = model_from_onnx(onnx_bytes, (manifest.architecture or {}).get("config"), crops)
        teacher = "dlib" if "dlib" in (manifest.provenance.teacher or "dlib") else "sface"
        payload = {
            "arch": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "meta": {"config": {"teacher": teacher}, "rebuilt_from": manifest.ref},
        }
        record = manifest.pruning.model_dump() if manifest.pruning else {}
        payload |= {k: v for k, v in record.items() if k in ("criterion", "level")}
    payload.setdefault("meta", {})["published_as"] = manifest.ref
    tmp = target.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target
