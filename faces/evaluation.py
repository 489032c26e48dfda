"""The evaluation harness (``faceverify eval``, ``publish``): verification accuracy from raw photos.

Every photo goes through :class:`faces.pipeline.FacePipeline` with a :class:`~faces.spec.PreprocessSpec`
(the serving one, or ``BENCHMARK`` = serving but the centred face, for LFW), so a figure measured here is
what the API gives. Metrics need scikit-learn (the offline extra); the rest runs on the serving set.
Protocol for LFW View 2 (Huang et al. 2007): 10 folds of 600 pairs; each fold's accuracy uses the threshold
that maximises accuracy on the other nine folds. Also EER and TAR at FAR = 1e-3 over all pairs.
A photo where no face is found still counts: it falls back to a fixed centre alignment, and the number of
such photos is reported as ``failures_to_acquire``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from faces.align import align_face, get_template
from faces.decode import decode_image
from faces.pipeline import FacePipeline
from faces.spec import BENCHMARK, SERVING, PreprocessSpec
from model_store import ModelStore

FaceSelection = Literal["largest", "centre"]


@dataclass(frozen=True)
class Pair:
    path_a: str
    path_b: str
    same: bool
    fold: int


def default_selection(pairs_file: Path) -> FaceSelection:
    """LFW's pairs.txt → ``centre`` (its photos are centred on the labelled person); a CSV → ``largest``."""
    first = pairs_file.read_text().split("\n", 1)[0].split()
    return "centre" if len(first) == 2 and all(h.isdigit() for h in first) else "largest"


def benchmark_spec(pairs_file: Path, selection: FaceSelection | None = None) -> PreprocessSpec:
    """The spec a pair list is measured with: ``BENCHMARK`` for LFW, ``SERVING`` for a CSV (or as chosen)."""
    return BENCHMARK if (selection or default_selection(pairs_file)) == "centre" else SERVING


def read_pairs(path: Path) -> list[Pair]:
    """LFW ``pairs.txt`` (header ``10 300``) or CSV ``path_a,path_b,same[,fold]`` (paths relative to root)."""
    lines = path.read_text().splitlines()
    header = lines[0].split()
    if len(header) == 2 and all(h.isdigit() for h in header):
        folds, per_fold = int(header[0]), int(header[1])
        pairs = []
        for index, line in enumerate(lines[1 : 1 + folds * 2 * per_fold]):
            parts = line.split()
            fold = index // (2 * per_fold)
            if len(parts) == 3:
                name, a, b = parts
                pairs.append(Pair(_lfw(name, a), _lfw(name, b), True, fold))
            else:
                name_a, a, name_b, b = parts
                pairs.append(Pair(_lfw(name_a, a), _lfw(name_b, b), False, fold))
        return pairs
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Pair(
            row["path_a"],
            row["path_b"],
            row["same"].strip().lower() in {"1", "true", "yes", "same"},
            int(row["fold"]) if row.get("fold") not in (None, "") else index % 10,
        )
        for index, row in enumerate(rows)
    ]


def _lfw(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


# ---- faces ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AcquiredFace:
    landmarks: np.ndarray  # (5, 2)
    box: np.ndarray  # (4,)
    detected: bool


def centre_fallback(height: int, width: int, template: str = "arcface_112") -> AcquiredFace:
    """Template landmarks scaled onto a centred square of half the image's shorter side.

    For LFW's 250×250 deep-funneled photos this lands close to where the subject's face is.
    """
    spec = get_template(template)
    side = 0.5 * min(height, width)
    scale = side / spec.size[0]
    offset = np.array([(width - side) / 2, (height - side) / 2])
    landmarks = spec.points * scale + offset
    box = np.array([offset[0], offset[1], offset[0] + side, offset[1] + side])
    return AcquiredFace(landmarks.astype(np.float32), box.astype(np.float32), detected=False)


def acquire_faces(
    root: Path, paths: Sequence[str], pipeline: FacePipeline, cache: Path | None = None
) -> dict[str, AcquiredFace]:
    """One face per photo, the spec's way; a photo it refuses falls back to the centre (``detected`` False).

    Cached by spec, detector and photo list (the cache key is the caller's).
    """
    from tqdm import tqdm

    if cache is not None and cache.exists():
        saved = np.load(cache, allow_pickle=False)
        if list(saved["paths"]) == list(paths):
            return {
                p: AcquiredFace(saved["landmarks"][i], saved["boxes"][i], bool(saved["detected"][i]))
                for i, p in enumerate(paths)
            }
    faces: dict[str, AcquiredFace] = {}
    for path in tqdm(paths, desc="detect", unit="photo"):
        image = pipeline.decode((root / path).read_bytes())
        found = pipeline.acquire(image)
        if found.ok and found.face is not None:
            faces[path] = AcquiredFace(found.face.landmarks, found.face.box, True)
        else:
            faces[path] = centre_fallback(image.shape[0], image.shape[1], pipeline.spec.template)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            paths=np.array(paths),
            landmarks=np.stack([faces[p].landmarks for p in paths]),
            boxes=np.stack([faces[p].box for p in paths]),
            detected=np.array([faces[p].detected for p in paths]),
        )
    return faces


# ---- embedding ------------------------------------------------------------------------------------
# An embedder maps (photo, face) pairs to unit vectors; batched over photos for speed.
FaceEmbedFn = Callable[[list[np.ndarray], list[AcquiredFace]], np.ndarray]


def crop_embedder(embed_crops: Callable[[np.ndarray], np.ndarray], template: str) -> FaceEmbedFn:
    """Wrap a crops → embeddings function (ONNX variant or torch model) with the serving alignment."""

    def embed(images: list[np.ndarray], faces: list[AcquiredFace]) -> np.ndarray:
        crops = np.stack(
            [align_face(img, f.landmarks, template) for img, f in zip(images, faces, strict=True)]
        )
        return embed_crops(crops)

    return embed


def embed_photos(
    root: Path,
    faces: dict[str, AcquiredFace],
    embed: FaceEmbedFn,
    batch_size: int = 64,
    max_pixels: int = BENCHMARK.max_pixels,
) -> dict[str, np.ndarray]:
    from tqdm import tqdm

    paths = list(faces)
    out: dict[str, np.ndarray] = {}
    for start in tqdm(range(0, len(paths), batch_size), desc="embed", unit="batch"):
        chunk = paths[start : start + batch_size]
        images = [decode_image((root / p).read_bytes(), max_pixels=max_pixels) for p in chunk]
        vectors = embed(images, [faces[p] for p in chunk])
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        out.update(zip(chunk, vectors, strict=True))
    return out


# ---- metrics --------------------------------------------------------------------------------------
def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy (midpoints between sorted scores)."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
    accuracies = [np.mean((scores > t) == same) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def verification_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, object]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fold_acc, fold_thr = [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        threshold = best_threshold(scores[train], same[train])
        fold_thr.append(threshold)
        fold_acc.append(float(np.mean((scores[test] > threshold) == same[test])))
    fpr, tpr, thresholds = roc_curve(same, scores)
    fnr = 1 - tpr
    eer_index = int(np.nanargmin(np.abs(fnr - fpr)))
    at_far = fpr <= 1e-3
    return {
        "accuracy_mean": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracies": fold_acc,
        "threshold_mean": float(np.mean(fold_thr)),
        "eer": float((fpr[eer_index] + fnr[eer_index]) / 2),
        "tar_at_far_1e-3": float(tpr[at_far].max()) if at_far.any() else 0.0,
        "auc": float(roc_auc_score(same, scores)),
        "n_pairs": len(scores),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thresholds.tolist()},
    }


def plot_roc(curves: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for label, metrics in curves.items():
        roc = metrics["roc"]
        ax.plot(
            np.maximum(roc["fpr"], 1e-4), roc["tpr"], label=f"{label} (acc {metrics['accuracy_mean']:.4f})"
        )
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def evaluate(
    pairs: list[Pair],
    root: Path,
    embed: FaceEmbedFn,
    *,
    store: ModelStore | None = None,
    spec: PreprocessSpec = SERVING,
    cache_dir: Path | None = None,
) -> dict[str, object]:
    """Accuracy of ``embed`` on ``pairs``; every photo acquired with ``spec`` (``benchmark_spec``)."""
    store = store or ModelStore()
    pipeline = FacePipeline.from_spec(spec, store)
    paths = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    cache = None
    if cache_dir is not None:
        detector_sha = store.manifest(pipeline.spec.detector).artifacts["onet"].sha256
        key = hashlib.sha256(
            "\n".join([str(root.resolve()), pipeline.spec.model_dump_json(), detector_sha, *paths]).encode()
        ).hexdigest()[:16]
        cache = cache_dir / f"faces-{key}.npz"
    faces = acquire_faces(root, paths, pipeline, cache)
    vectors = embed_photos(root, faces, embed, max_pixels=pipeline.spec.max_pixels)
    scores = np.array([float(vectors[p.path_a] @ vectors[p.path_b]) for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    metrics = verification_metrics(scores, same, folds)
    metrics["scores"] = scores  # per pair, in the pairs' order (``faceverify eval --scores``)
    metrics["failures_to_acquire"] = sum(1 for f in faces.values() if not f.detected)
    metrics["face_selection"] = pipeline.spec.selection
    metrics["preprocess"] = pipeline.spec  # what the figures were measured with (into the manifest)
    metrics["faces"] = faces  # path → the face each photo was measured on
    metrics["n_photos"] = len(paths)
    return metrics


def write_report(metrics: dict[str, object], out: Path, label: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    slim = {k: v for k, v in metrics.items() if k not in ("roc", "scores", "preprocess", "faces")}
    spec = metrics.get("preprocess")
    if isinstance(spec, PreprocessSpec):
        slim["preprocess"] = spec.model_dump()
    out.write_text(json.dumps(slim | {"label": label}, indent=2) + "\n")
    plot_roc({label: metrics}, out.with_suffix(".png"), f"ROC — {label}")


def write_scores(pairs: list[Pair], scores: np.ndarray, out: Path, threshold: float | None = None) -> None:
    """One row per pair: the photos, the truth, the fold, the score, and the decision at ``threshold``."""
    import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path_a", "path_b", "same", "fold", "score", "match"])
        for pair, score in zip(pairs, scores, strict=True):
            match = "" if threshold is None else int(score >= threshold)
            writer.writerow([pair.path_a, pair.path_b, int(pair.same), pair.fold, f"{score:.6f}", match])
