"""``faceverify prep``: a folder of face photos → aligned 112×112 uint8 crops in shards + an index.

Uses exactly the service's decode → detect → align code. The sorted photo list is cut into fixed shards, so
a rerun skips finished shards and resumes where it stopped. Every photo gets an index record, failures
included (with the reason), so nothing is dropped silently.

Layout of ``out_dir``::

    meta.json                  what was prepared, from where, with which settings
    shard-00000.npy            (n_ok, 112, 112, 3) uint8 crops of the shard's accepted photos
    shard-00000.jsonl          one record per photo: file, identity, status, score, box, landmarks, row
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from faces.detect import Face, MTCNNDetector

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class PrepConfig:
    shard_size: int = 2048
    workers: int = 2
    min_face_size: int = 20
    min_score: float = 0.9
    template: str = "arcface_112"
    max_pixels: int = 40_000_000
    detector: str = "mtcnn"
    # Detection runs on the photo with a black border of this fraction of its longer side; alignment reads
    # the original. Tight portraits (FairFace, UTKFace) otherwise get misplaced landmarks: on 150 FairFace
    # photos a third of the faces moved by more than 0.3 inter-ocular distances, onto the right place.
    detect_pad_fraction: float = 0.3
    # Longest side of the (padded) photo that detection sees; larger ones are shrunk first. Training photos
    # show one large face, and full-size CelebA originals padded cost ~200 ms each otherwise.
    max_detect_side: int | None = 640


def list_photos(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()
    )


def load_labels(path: Path | None) -> dict[str, str]:
    """CSV with columns ``file,identity`` (file relative to the photo folder); empty identity = unknown."""
    if path is None or not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {row["file"]: row["identity"] for row in csv.DictReader(handle) if row.get("identity")}


def implausible_landmarks(box: np.ndarray, landmarks: np.ndarray) -> str | None:
    """Reason to distrust a detection's landmarks (close-ups and partial faces), or None.

    The alignment trusts the five points completely, so a face whose points are in an impossible layout
    would become a garbage training crop.
    """
    (lex, ley), (rex, rey), (_, ny), (lmx, lmy), (rmx, rmy) = landmarks
    width = box[2] - box[0]
    if not (lex < rex and lmx < rmx):
        return "left/right swapped"
    if not (max(ley, rey) < ny < min(lmy, rmy)):
        return "eyes, nose, mouth out of vertical order"
    if rex - lex < 0.2 * width:
        return "eyes too close for the box"
    margin = 0.15 * width
    if np.any(landmarks[:, 0] < box[0] - margin) or np.any(landmarks[:, 0] > box[2] + margin):
        return "landmarks outside the box"
    return None


def detect_padded(detector: MTCNNDetector, image: np.ndarray, pad_fraction: float) -> list[Face]:
    """Faces of ``image`` found on a black-bordered copy, in the original image's coordinates."""
    import cv2

    from faces.detect import Face

    pad = round(pad_fraction * max(image.shape[:2]))
    if pad == 0:
        return detector.detect(image)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return [
        Face(box=f.box - np.float32(pad), score=f.score, landmarks=f.landmarks - np.float32(pad))
        for f in detector.detect(padded)
    ]


# ---- worker process -------------------------------------------------------------------------------
_worker: dict[str, object] = {}


def _init_worker(folder: str, config: PrepConfig, store_root: str) -> None:
    from faces.detect import DetectorConfig, MTCNNDetector
    from model_store import ModelStore

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    detector = MTCNNDetector.from_store(
        ModelStore(store_root),
        config.detector,
        DetectorConfig(min_face_size=config.min_face_size, max_image_side=config.max_detect_side),
    )
    _worker.update(folder=Path(folder), config=config, detector=detector)


def _process(rel: str) -> tuple[dict[str, object], np.ndarray | None]:
    from faces.align import align_face
    from faces.decode import decode_image
    from service.errors import DomainError

    folder: Path = _worker["folder"]  # type: ignore[assignment]
    config: PrepConfig = _worker["config"]  # type: ignore[assignment]
    detector = _worker["detector"]
    record: dict[str, object] = {"file": rel}
    try:
        image = decode_image((folder / rel).read_bytes(), max_pixels=config.max_pixels)
    except DomainError as error:
        return record | {"status": f"decode:{error.code}"}, None
    record["size"] = [int(image.shape[1]), int(image.shape[0])]
    faces = detect_padded(detector, image, config.detect_pad_fraction)  # type: ignore[arg-type]
    record["n_faces"] = len(faces)
    if not faces:
        return record | {"status": "no_face"}, None
    face = faces[0]  # largest
    record |= {
        "score": round(face.score, 5),
        "box": [round(float(v), 2) for v in face.box],
        "landmarks": [round(float(v), 2) for v in face.landmarks.reshape(-1)],
    }
    if face.score < config.min_score:
        return record | {"status": "low_score"}, None
    reason = implausible_landmarks(face.box, face.landmarks)
    if reason:
        return record | {"status": "bad_landmarks", "reason": reason}, None
    return record | {"status": "ok"}, align_face(image, face.landmarks, config.template)


# ---- driver ---------------------------------------------------------------------------------------
def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def shard_paths(out_dir: Path, index: int) -> tuple[Path, Path]:
    return out_dir / f"shard-{index:05d}.npy", out_dir / f"shard-{index:05d}.jsonl"


def prepare(
    folder: Path,
    out_dir: Path,
    *,
    name: str,
    labels: dict[str, str] | None = None,
    config: PrepConfig = PrepConfig(),
    store_root: Path | None = None,
    progress: bool = True,
) -> Counter[str]:
    """Prepare every photo under ``folder``; returns a count of statuses over all shards."""
    from tqdm import tqdm

    from model_store import DEFAULT_ROOT

    labels = labels or {}
    photos = list_photos(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": name,
        "photos_root": str(folder.resolve()),
        "photos": len(photos),
        "labelled": sum(1 for p in photos if p in labels),
        "config": asdict(config),
    }
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        previous = json.loads(meta_path.read_text())
        settings = {k: v for k, v in meta["config"].items() if k != "workers"}
        previous_settings = {k: v for k, v in previous["config"].items() if k != "workers"}
        if previous["photos"] != meta["photos"] or previous_settings != settings:
            raise RuntimeError(f"{out_dir} was prepared from other photos or settings; use a new folder")
    _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")

    shards = [photos[i : i + config.shard_size] for i in range(0, len(photos), config.shard_size)]
    todo = [k for k in range(len(shards)) if not shard_paths(out_dir, k)[1].exists()]
    bar = tqdm(total=len(photos), desc=f"prep {name}", unit="photo", disable=not progress)
    bar.update(len(photos) - sum(len(shards[k]) for k in todo))
    ctx = get_context("spawn")  # ORT sessions are not fork-safe
    with ctx.Pool(
        config.workers, _init_worker, (str(folder), config, str(store_root or DEFAULT_ROOT))
    ) as pool:
        for k in todo:
            records, crops = [], []
            for record, crop in pool.imap(_process, shards[k], chunksize=4):
                record["identity"] = labels.get(str(record["file"]))
                if crop is not None:
                    record["row"] = len(crops)
                    crops.append(crop)
                records.append(record)
                bar.update()
            crops_path, index_path = shard_paths(out_dir, k)
            stacked = np.stack(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)
            atomic_save_npy(crops_path, stacked)
            # the index is written last: its presence marks the shard finished
            _atomic_write_text(index_path, "".join(json.dumps(r) + "\n" for r in records))
    bar.close()
    return Counter(str(r["status"]) for r in iter_records(out_dir))


def iter_records(out_dir: Path) -> Iterator[dict[str, object]]:
    for index_path in sorted(out_dir.glob("shard-*.jsonl")):
        shard = int(index_path.stem.split("-")[1])
        for line in index_path.read_text().splitlines():
            yield json.loads(line) | {"shard": shard}
