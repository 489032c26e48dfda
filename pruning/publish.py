"""``faceverify publish``: a checkpoint → ONNX → measured → a new version in the model store.

The figures in the manifest are measured on the exported ONNX bytes themselves (not on the torch model):
LFW View 2 through the evaluation harness, and the threshold for FMR = 1e-3 calibrated on the
identity-held-out validation split (never on LFW).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from faces.evaluation import benchmark_spec, crop_embedder, evaluate, read_pairs
from faces.spec import manifest_record
from faces.tensor import crops_to_tensor
from model_store import Manifest, ModelStore, Provenance
from model_store.manifest import DataSource
from model_store.store import sha256_file
from pruning.calibrate import calibrate
from pruning.checkpoint import Checkpoint, load_checkpoint, save_weights
from pruning.data.faceset import load_validation
from pruning.export import export_onnx, parity, publish_prepared
from pruning.models import INPUT_CARD, FaceEmbedder
from pruning.sface import SFACE, SFACE_NAME
from pruning.teacher import TEACHER_NAME

LFW_KEYS = (
    "accuracy_mean",
    "accuracy_std",
    "eer",
    "tar_at_far_1e-3",
    "auc",
    "n_pairs",
    "failures_to_acquire",
    "face_selection",
)


def onnx_embed_fn(path: Path, threads: int = 2):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(crops: np.ndarray) -> np.ndarray:
        outs = []
        for start in range(0, len(crops), 256):
            x = crops_to_tensor(crops[start : start + 256], INPUT_CARD.mean, INPUT_CARD.std)
            outs.append(session.run(None, {"input": x})[0])
        return np.concatenate(outs)

    return embed


def teacher_provenance(teacher: str) -> str:
    """Name, bytes and licence of a distillation teacher, as the manifest records it."""
    if teacher == "sface":
        return f"{SFACE_NAME} (sha256 {SFACE.sha256}, {SFACE.licence}, from PyPI {SFACE.wheel})"
    return f"{TEACHER_NAME} (dlib, face-recognition-models 0.3.0, CC0)"


def git_commit() -> str | None:
    """The code commit recorded in a manifest's provenance (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,  # this checkout, whatever the caller's working directory
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def pruning_section(checkpoint: Checkpoint) -> dict[str, object] | None:
    """The manifest's ``pruning`` record of a ``faceverify prune`` level checkpoint (None for a dense one).

    Filters removed per layer and the parameter reduction are taken against the dense model the run
    started from: recorded in the snapshot, or (older snapshots) read from the run's dense checkpoint.
    """
    record = checkpoint.record
    if record is None:
        return None
    config = checkpoint.meta.prune_config or {}
    dense = checkpoint.dense
    if dense is None and config.get("checkpoint") and Path(config["checkpoint"]).exists():
        from pruning.prune import size_record

        dense = size_record(load_checkpoint(Path(config["checkpoint"]))[0])
    section: dict[str, object] = {
        "criterion": checkpoint.criterion,
        "pruning_ratio": checkpoint.level,
        "iterative_steps": config.get("iterative_steps"),
        "removed_share": record["removed_share"],
        "iteration": record["iteration"],
        "filters": record["filters"],
        "config": config or None,
    }
    train_config = checkpoint.meta.config
    if train_config.get("init"):  # a level trained further with `faceverify train --init`
        section["finetuned_after_pruning"] = {
            "init": train_config["init"],
            "steps": checkpoint.step,
            "lr": train_config.get("lr"),
        }
    if dense is not None:
        section["filters_removed"] = {k: dense["filters"][k] - record["filters"][k] for k in dense["filters"]}
        section["dense_params"] = dense["params"]
        section["params_removed_share"] = 1 - record["params"] / dense["params"]
        section["flops_removed_share"] = 1 - record["flops"] / dense["flops"]
    return section


def _pruned_description(parent: str | None, pruning: dict[str, object] | None) -> str:
    if not pruning:
        return ""
    share = round(100 * float(pruning["pruning_ratio"]))  # type: ignore[arg-type]
    return f"{parent or 'dense model'}: {share} % of filters removed by {pruning['criterion']} pruning"


@dataclass(frozen=True)
class Benchmark:
    """What a checkpoint is measured on before it is published: the crop cache's held-out validation split
    (threshold calibration) and a pairs file with its photos (LFW: benchmark only)."""

    crops_root: Path
    lfw_pairs: Path
    lfw_root: Path
    cache_dir: Path | None = None  # detector results of the pairs' photos, reused across checkpoints
    val_fraction: float = 0.1


@dataclass
class Measurement:
    """A checkpoint exported to ONNX and measured on those bytes."""

    model: FaceEmbedder
    checkpoint: Checkpoint
    onnx_path: Path
    lfw: dict[str, object]
    validation: dict[str, object]
    parity: float
    train_counts: dict[str, int]
    weights_path: Path


@contextmanager
def measured(
    checkpoint: Path,
    benchmark: Benchmark,
    *,
    store: ModelStore,
    flip_fusion: bool = False,
) -> Iterator[Measurement]:
    """Export ``checkpoint`` to a temporary ONNX file, check parity, measure LFW and the validation split."""
    model, loaded = load_checkpoint(checkpoint)
    val = load_validation(benchmark.crops_root, fraction=benchmark.val_fraction)  # only the held-out crops
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, path, flip_fusion=flip_fusion)
        cosine = parity(model, path, val.crops[:256], flip_fusion=flip_fusion)
        if cosine < 0.9999:
            raise RuntimeError(f"ONNX parity too low: {cosine:.6f}")
        embed = onnx_embed_fn(path)
        validation = calibrate(embed(val.crops), val.identity)
        lfw = evaluate(
            read_pairs(benchmark.lfw_pairs),
            benchmark.lfw_root,
            crop_embedder(embed, INPUT_CARD.alignment_template),
            store=store,
            cache_dir=benchmark.cache_dir,
            spec=benchmark_spec(benchmark.lfw_pairs),
        )
        train_counts = (loaded.meta.data or {}).get("train") or {}
        weights_path = Path(tmp) / "weights.pt"
        save_weights(weights_path, loaded)
        yield Measurement(model, loaded, path, lfw, validation, cosine, train_counts, weights_path)


def publish_checkpoint(
    store: ModelStore,
    checkpoint: Path,
    benchmark: Benchmark,
    *,
    name: str,
    parent: str | None = None,
    alias: str | None = None,
    description: str | None = "",
    command: str | None = None,
    pruning_extra: dict[str, object] | None = None,
    flip_fusion: bool = False,
) -> Manifest:
    """``description=None``: describe a pruned level from its own pruning record."""
    with measured(checkpoint, benchmark, store=store, flip_fusion=flip_fusion) as m:
        pruning = pruning_section(m.checkpoint)
        if pruning is not None and pruning_extra:
            pruning |= pruning_extra
        if description is None:
            description = _pruned_description(parent, pruning)
        config = m.checkpoint.meta.config
        manifest = publish_prepared(
            store,
            m.model,
            m.onnx_path,
            name=name,
            description=description,
            parent=parent,
            metrics={
                "lfw": {k: m.lfw[k] for k in LFW_KEYS},  # type: ignore[misc]
                "validation": {k: v for k, v in m.validation.items() if k != "thresholds"},  # type: ignore[misc]
                "onnx_parity": {"min_cosine": m.parity, "crops": 256},
            },
            thresholds=m.validation["thresholds"],  # type: ignore[arg-type]
            provenance=Provenance(
                data_sources=[DataSource(name=k, images=int(v)) for k, v in sorted(m.train_counts.items())],
                teacher=teacher_provenance(m.checkpoint.meta.teacher),
                seed=int(config.get("seed", 0)) if config else None,
                code_commit=git_commit(),
                command=command,
            ),
            pruning=pruning,
            flip_fusion=flip_fusion,
            weights_path=m.weights_path,
            preprocess=manifest_record(store, lfw=m.lfw["preprocess"]),  # type: ignore[arg-type]
        )
    if alias:
        store.set_alias(alias, manifest.ref)
    return manifest


def publish_levels(
    store: ModelStore,
    run_dir: Path,
    benchmark: Benchmark,
    *,
    name_prefix: str,
    parent: str | None = None,
    command: str | None = None,
    flip_fusion: bool = False,
) -> list[Manifest]:
    """Publish every ``level-XX.pt`` of a ``faceverify prune`` run as ``{name_prefix}-XX``.

    Rerunnable: a level whose checkpoint (by sha256) is already the latest version of its name is skipped.
    """
    published = []
    for checkpoint in sorted(run_dir.glob("level-*.pt")):
        name = f"{name_prefix}-{checkpoint.stem.removeprefix('level-')}"
        digest = sha256_file(checkpoint)
        versions = store.versions(name) if name in store.names() else []
        if (
            versions
            and getattr(store.manifest(f"{name}@{max(versions)}").pruning, "checkpoint_sha256", None)
            == digest
        ):
            continue
        published.append(
            publish_checkpoint(
                store,
                checkpoint,
                benchmark,
                name=name,
                parent=parent,
                description=None,
                command=command,
                pruning_extra={"checkpoint_sha256": digest},
                flip_fusion=flip_fusion,
            )
        )
    return published
