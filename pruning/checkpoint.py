"""Checkpoints carry their architecture (family and config) with the weights, so pruned models load without
code. An architecture that names no family is a SqueezeFaceNet (written before the other families).

On disk a checkpoint is a plain ``torch.save`` dict (so files written before these records still load);
in memory it is a :class:`Checkpoint`, whose fields are every key any job writes: training (step, best,
optimizer, val, meta), pruning levels (criterion, level, record, dense) and the pruning schedule's resume
state (iteration, history, prune_config). An unknown key is refused on write and on read.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pruning.models import INPUT_CARD, FaceEmbedder, create_model, saved_architecture


class CheckpointFormatError(ValueError):
    """A checkpoint file holds keys no job writes (a file of another tool, or a newer format)."""


@dataclass
class CheckpointMeta:
    """What a training or pruning run records about itself beside the weights."""

    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_json(), or {"teacher": ...}
    target_mean: list[float] | None = None  # mean raw teacher descriptor: the centred target space
    data: dict[str, Any] | None = None  # faces per source, training and validation
    val_identities: int | None = None
    params: int | None = None
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    prune_config: dict[str, Any] | None = None  # the PruneConfig of the run a level came from
    published_as: str | None = None  # name@version, when materialised from the model store
    rebuilt_from: str | None = None  # name@version whose ONNX graph the weights were rebuilt from
    soup: dict[str, Any] | None = None  # members and scores of a weight average (pruning.soup)

    @property
    def teacher(self) -> str:
        """The teacher the weights were distilled from (checkpoints from before SFace: dlib)."""
        return str(self.config.get("teacher", "dlib"))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CheckpointMeta:
        return cls(**_known(cls, data or {}, "meta"))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Checkpoint:
    """A checkpoint payload, typed: ``arch`` and ``state_dict`` rebuild the network (load_checkpoint)."""

    arch: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)
    # training
    step: int | None = None
    best: float | None = None  # best validation score so far (resume state)
    optimizer: dict[str, Any] | None = None
    val: dict[str, Any] | None = None  # validation metrics where this checkpoint was taken
    # a pruned level, kept through later fine-tuning (publish reads it)
    criterion: str | None = None
    level: float | None = None
    record: dict[str, Any] | None = None  # the schedule's history entry where the level was reached
    dense: dict[str, Any] | None = None  # size record of the dense model the schedule started from
    # the pruning schedule's resume state
    iteration: int | None = None
    history: list[dict[str, Any]] | None = None
    config: dict[str, Any] | None = None  # PruneConfig.to_json() of the schedule

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Checkpoint:
        known = _known(cls, payload, "checkpoint")
        known["meta"] = CheckpointMeta.from_dict(payload.get("meta"))
        return cls(**known)

    def to_payload(self) -> dict[str, Any]:
        """The dict written to disk: fields left unset are not written."""
        payload = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "meta"}
        return {k: v for k, v in payload.items() if v is not None} | {"meta": self.meta.to_dict()}

    @property
    def lineage(self) -> dict[str, Any]:
        """A pruned level's record, carried by every later checkpoint of the same weights."""
        return {k: getattr(self, k) for k in PRUNING_FIELDS if getattr(self, k) is not None}

    def slim(self) -> Checkpoint:
        """What a published weights file keeps: enough to fine-tune or prune again (no optimiser state)."""
        meta = CheckpointMeta(
            config=self.meta.config,
            target_mean=self.meta.target_mean,
            data=self.meta.data,
            prune_config=self.meta.prune_config,
            soup=self.meta.soup,
        )
        return Checkpoint(self.arch, self.state_dict, meta, **self.lineage)


PRUNING_FIELDS = ("criterion", "level", "record", "dense")


def _known(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointFormatError(f"{what} keys {unknown} are not part of the checkpoint format")
    return {k: v for k, v in data.items() if k != "meta"}


def _write(path: Path, checkpoint: Checkpoint) -> None:
    """Atomic write: a crash mid-save never leaves a half checkpoint under the final name."""
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint.to_payload(), tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, model: FaceEmbedder, **extra: Any) -> Checkpoint:
    """``model``'s architecture and weights with ``extra`` fields of :class:`Checkpoint` (``meta`` a
    :class:`CheckpointMeta` or its dict)."""
    meta = extra.pop("meta", None)
    checkpoint = Checkpoint.from_payload(
        {"arch": saved_architecture(model), "state_dict": model.state_dict(), **extra}
    )
    checkpoint.meta = meta if isinstance(meta, CheckpointMeta) else CheckpointMeta.from_dict(meta)
    _write(path, checkpoint)
    return checkpoint


def read_checkpoint(path: Path) -> Checkpoint:
    return Checkpoint.from_payload(torch.load(path, map_location="cpu", weights_only=False))


def load_checkpoint(path: Path) -> tuple[FaceEmbedder, Checkpoint]:
    checkpoint = read_checkpoint(path)
    model = create_model(checkpoint.arch)
    model.load_state_dict(checkpoint.state_dict)
    model.eval()
    return model, checkpoint


def torch_embed_fn(model: FaceEmbedder, batch_size: int = 128):
    """Crops (N, 112, 112, 3) uint8 → unit embeddings, with the serving normalisation."""
    from faces.tensor import crops_to_tensor

    def embed(crops: np.ndarray) -> np.ndarray:
        model.eval()
        device = next(model.parameters()).device  # wherever the network is (an accelerator while training)
        out = []
        with torch.no_grad():
            for start in range(0, len(crops), batch_size):
                x = torch.from_numpy(
                    crops_to_tensor(crops[start : start + batch_size], INPUT_CARD.mean, INPUT_CARD.std)
                ).to(device)
                out.append(torch.nn.functional.normalize(model(x), dim=1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.config.embedding_dim), np.float32)

    return embed


def load_embedder_checkpoint(path: Path):
    """For ``faceverify eval --torch``: (label, FaceEmbedFn)."""
    from faces.evaluation import crop_embedder

    model, _ = load_checkpoint(path)
    return f"torch:{path.name}", crop_embedder(torch_embed_fn(model), INPUT_CARD.alignment_template)


# ---- published variants as starting points --------------------------------------------------------
WEIGHTS_ROLE = "weights"  # the store artifact holding a variant's PyTorch weights (Checkpoint.slim)


def save_weights(path: Path, checkpoint: Checkpoint) -> None:
    _write(path, checkpoint.slim())


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
        checkpoint = Checkpoint.from_payload(
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        )
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
        checkpoint = Checkpoint(
            saved_architecture(model),
            model.state_dict(),
            CheckpointMeta(config={"teacher": teacher}, rebuilt_from=manifest.ref),
        )
        if manifest.pruning is not None:
            checkpoint.criterion = manifest.pruning.criterion
            checkpoint.level = manifest.pruning.pruning_ratio
    checkpoint.meta.published_as = manifest.ref
    _write(target, checkpoint)
    return target
