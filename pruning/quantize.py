"""``faceverify quantize``: a published float embedder → ONNX Runtime static int8 (QDQ) → its own variant.

Activation ranges are calibrated on crops of the identity-held-out validation split (never on LFW), and so
is the new variant's own decision threshold: int8 moves the scores a little, so the parent's threshold
would no longer give the target false-match rate. Any published embedder can be quantised, flip-fused
graphs included (both passes share the quantised weights).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from faces.embed import Embedder
from faces.spec import manifest_record
from faces.tensor import crops_to_tensor
from model_store import Manifest, ModelStore, PreprocessSpec, QuantizationRecord
from pruning.calibrate import calibrate
from pruning.data.faceset import META_FILE, FaceSet, load_validation, read_meta

Method = Literal["minmax", "entropy", "percentile"]
_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# The convolutions, the head and the ops between them that int8 kernels handle (concat, pooling), so
# activations stay int8 from one convolution to the next; the final normalisations stay float.
QUANTIZED_OPS = ("Conv", "Gemm", "Concat", "MaxPool", "Relu")
_CALIBRATION_BATCH = 32


class LfwCalibrationError(ValueError):
    """The calibration crops look like LFW, which is a benchmark only."""


@dataclass(frozen=True)
class QuantConfig:
    """How a variant is quantised; recorded whole in the manifest's ``quantization`` section."""

    calibration_crops: int = 512  # drawn at random (seed) from the validation split
    method: Method = "minmax"
    per_channel: bool = True
    seed: int = 0
    val_fraction: float = 0.1
    op_types: tuple[str, ...] = QUANTIZED_OPS
    sources: list[str] | None = field(default=None)  # crop caches (default: every one)
    fmrs: tuple[float, ...] = (1e-3, 1e-4)  # target false-match rates the thresholds are calibrated for

    def record(self, validation: FaceSet) -> dict[str, object]:
        return {
            "tool": f"onnxruntime {ort.__version__} quantize_static",
            "format": "QDQ",
            "weights": "int8, per channel" if self.per_channel else "int8, per tensor",
            "activations": "uint8, per tensor",
            "calibration_method": self.method,
            "calibration_crops": min(self.calibration_crops, len(validation)),
            "calibration_data": "identity-held-out validation split of the crop cache",
            "calibration_sources": sorted(set(validation.source.tolist())),
            "op_types": list(self.op_types),
            "seed": self.seed,
            "val_fraction": self.val_fraction,
        }


class _Crops(CalibrationDataReader):
    def __init__(self, crops: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self._batches: Iterator[np.ndarray] = (
            crops[i : i + _CALIBRATION_BATCH] for i in range(0, len(crops), _CALIBRATION_BATCH)
        )
        self._mean, self._std = mean, std

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"input": crops_to_tensor(batch, self._mean, self._std)}


def refuse_lfw(crops_root: Path, validation: FaceSet) -> None:
    """Calibrating on LFW would tune on the benchmark: refuse caches whose photos or labels are LFW's."""
    for source in sorted(set(validation.source.tolist())):
        folder = crops_root / source
        meta = read_meta(folder) if (folder / META_FILE).exists() else {}
        photos = Path(str(meta.get("photos_root", "")))
        if "lfw" in source.lower() or any(part.lower().startswith("lfw") for part in photos.parts):
            raise LfwCalibrationError(
                f"crop cache {source!r} (photos {photos}) looks like LFW, a benchmark only: "
                "calibrate on the validation split of the training sources"
            )
    if any(str(i).lower().startswith("lfw") for i in validation.identity):
        raise LfwCalibrationError("validation identities are labelled as LFW: LFW is a benchmark only")


def quantize_onnx(
    float_bytes: bytes, out_path: Path, crops: np.ndarray, config: QuantConfig, spec: Manifest
) -> None:
    """Float ONNX bytes → a QDQ int8 file at ``out_path``, activation ranges from ``crops``."""
    with tempfile.TemporaryDirectory() as tmp:
        float_path, prepared = Path(tmp) / "float.onnx", Path(tmp) / "prepared.onnx"
        float_path.write_bytes(float_bytes)
        # Folds BatchNorm into Conv and infers shapes, so each convolution gets one set of ranges. (The
        # symbolic shape pass fails on the exporter's Expand of the normalisation; ONNX's own suffices.)
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Crops(crops, spec.input.mean, spec.input.std),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(config.op_types),
            per_channel=config.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_METHODS[config.method],
        )


def quantize_variant(
    store: ModelStore,
    parent_ref: str,
    crops_root: Path,
    *,
    name: str | None = None,
    config: QuantConfig | None = None,
    pairs: Path | None = None,
    images_root: Path | None = None,
    cache_dir: Path | None = None,
    command: str | None = None,
    code_commit: str | None = None,
    threads: int = 2,
) -> Manifest:
    """Quantise ``parent_ref`` (any published float embedder), measure it on validation, publish it.

    ``pairs`` and ``images_root`` (LFW, a benchmark only): measure the int8 bytes end to end from the
    photos, like ``faceverify publish`` does, and record it under ``metrics.lfw``.
    """
    config = config or QuantConfig()
    parent, float_bytes = store.load(parent_ref)
    if parent.kind != "embedder":
        raise ValueError(f"{parent.ref} is not an embedder")
    if parent.quantization:
        raise ValueError(f"{parent.ref} is already quantised; quantise its float parent {parent.parent}")
    validation = load_validation(crops_root, config.sources, config.val_fraction)
    refuse_lfw(crops_root, validation)
    _check_calibratable(validation, config.fmrs)
    rng = np.random.default_rng(config.seed)
    count = min(config.calibration_crops, len(validation))
    calibration = validation.crops[np.sort(rng.choice(len(validation), count, replace=False))]

    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "model.onnx"
        quantize_onnx(float_bytes, out_path, calibration, config, parent)
        float_embedder = Embedder(parent, float_bytes, intra_op_threads=threads)
        int8_embedder = Embedder(parent, out_path.read_bytes(), intra_op_threads=threads)
        reference, quantised = _embed(float_embedder, validation), _embed(int8_embedder, validation)
        cosine = np.sum(reference * quantised, axis=1)
        measured = calibrate(quantised, validation.identity, config.fmrs)
        parent_measured = calibrate(reference, validation.identity, config.fmrs)
        metrics: dict[str, dict[str, float | int | str]] = {
            "validation": {k: v for k, v in measured.items() if k != "thresholds"},  # type: ignore[misc]
            "int8_vs_parent": {
                "min_cosine": float(cosine.min()),
                "mean_cosine": float(cosine.mean()),
                "crops": len(validation),
                # the float parent on the same crops, for a like-for-like comparison
                **{
                    f"parent_{k}": v  # type: ignore[misc]
                    for k, v in parent_measured.items()
                    if k.startswith("tar_") or k == "eer"
                },
            },
        }
        measured_with: dict[str, PreprocessSpec] = {}
        if pairs is not None and images_root is not None:
            from faces.evaluation import benchmark_spec, crop_embedder, evaluate, read_pairs
            from pruning.publish import LFW_KEYS

            lfw = evaluate(
                read_pairs(pairs),
                images_root,
                crop_embedder(int8_embedder.embed, int8_embedder.template),
                store=store,
                cache_dir=cache_dir,
                spec=benchmark_spec(pairs),
            )
            metrics["lfw"] = {k: lfw[k] for k in LFW_KEYS}  # type: ignore[misc]
            measured_with["lfw"] = lfw["preprocess"]  # type: ignore[assignment]
        manifest = parent.model_copy(
            update={
                "name": name or f"{parent.name}-int8",
                "version": 1,
                "created_at": datetime.now(UTC),
                "description": (
                    f"{parent.ref} quantised to int8 (ONNX Runtime static QDQ, "
                    f"{'per-channel' if config.per_channel else 'per-tensor'} weights, "
                    f"{config.method} ranges from {count} validation crops)"
                ),
                "parent": parent.ref,
                "artifacts": {},
                "metrics": metrics,
                "thresholds": measured["thresholds"],
                "provenance": parent.provenance.model_copy(
                    update={"code_commit": code_commit, "command": command, "notes": None}
                ),
                "pruning": None,  # the network's own pruning record stays with the float parent
                "quantization": QuantizationRecord.model_validate(
                    config.record(validation) | {"parent_sha256": parent.artifact.sha256}
                ),
                "preprocess": manifest_record(store, **measured_with),
            }
        )
        return store.publish(Manifest.model_validate(manifest.model_dump()), {"model": out_path})


def _embed(embedder: Embedder, faces: FaceSet, batch: int = 256) -> np.ndarray:
    return np.concatenate([embedder.embed(faces.crops[i : i + batch]) for i in range(0, len(faces), batch)])


def _check_calibratable(validation: FaceSet, fmrs: tuple[float, ...]) -> None:
    """Refuse before quantising when the split is too small for a threshold at the first target FMR."""
    _, counts = np.unique(validation.identity, return_counts=True)
    genuine = int(np.sum(counts * (counts - 1) // 2))
    impostor = len(validation) * (len(validation) - 1) // 2 - genuine
    needed = int(np.ceil(10 / fmrs[0]))  # calibrate() wants 10 impostor pairs beyond the threshold
    if genuine == 0 or impostor < needed:
        raise ValueError(
            f"{len(validation)} validation faces give {genuine} genuine and {impostor} impostor pairs; "
            f"a threshold at FMR {fmrs[0]:g} needs at least one genuine and {needed} impostor pairs"
        )
