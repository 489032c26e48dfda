"""``faceverify prep``: a folder of face photos → aligned 112×112 uint8 crops in shards + an index.

Uses the service's own :class:`faces.pipeline.FacePipeline`, built from the ``TRAINING`` spec: the serving
geometry (detector, padding, face choice, template) with stricter gates, so an accepted crop is the crop
the service makes of that photo. The sorted photo list is cut into fixed shards, so
a rerun skips finished shards and resumes where it stopped. Every photo gets an index record, failures
included (with the reason), so nothing is dropped silently.

The cache's layout and format belong to :mod:`pruning.data.faceset`.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faces.quality import implausible_landmarks
from faces.spec import TRAINING, PreprocessSpec
from pruning.data.faceset import META_FILE, atomic_save_npy, iter_records, shard_paths

if TYPE_CHECKING:
    from faces.pipeline import FacePipeline

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@dataclass(frozen=True)
class PrepConfig:
    shard_size: int = 2048
    workers: int = 2
    # Detection runs on the photo with a black border (``detect_pad_fraction``), alignment reads the
    # original: tight portraits (FairFace, UTKFace) otherwise get misplaced landmarks (on 150 FairFace
    # photos a third of the faces moved by more than 0.3 inter-ocular distances, onto the right place).
    spec: PreprocessSpec = TRAINING

    def record(self) -> dict[str, object]:
        return {"shard_size": self.shard_size, "workers": self.workers, "preprocess": self.spec.model_dump()}


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


__all__ = ["PrepConfig", "atomic_save_npy", "implausible_landmarks", "iter_records", "load_labels", "prepare"]


# ---- worker process -------------------------------------------------------------------------------
_worker: dict[str, object] = {}


def _init_worker(folder: str, config: PrepConfig, store_root: str) -> None:
    from faces.pipeline import FacePipeline
    from model_store import ModelStore

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    pipeline = FacePipeline.from_spec(config.spec, ModelStore(store_root))
    _worker.update(folder=Path(folder), pipeline=pipeline)


def crop_record(pipeline: FacePipeline, data: bytes) -> tuple[dict[str, object], np.ndarray | None]:
    """One photo's index record (status, face) and its aligned crop when the spec accepts it."""
    from faces.errors import DomainError

    record: dict[str, object] = {}
    try:
        image = pipeline.decode(data)
    except DomainError as error:
        return record | {"status": f"decode:{error.code}"}, None
    record["size"] = [int(image.shape[1]), int(image.shape[0])]
    found = pipeline.acquire(image)
    record["n_faces"] = len(found.faces)
    face = found.face
    if face is None:
        return record | {"status": "no_face"}, None
    record |= {
        "score": round(face.score, 5),
        "box": [round(float(v), 2) for v in face.box],
        "landmarks": [round(float(v), 2) for v in face.landmarks.reshape(-1)],
    }
    if found.rejection == "bad_landmarks":
        return record | {"status": "bad_landmarks", "reason": found.reason}, None
    if found.rejection is not None:
        return record | {"status": found.rejection}, None
    return record | {"status": "ok"}, pipeline.align(image, face)


def _process(rel: str) -> tuple[dict[str, object], np.ndarray | None]:
    folder: Path = _worker["folder"]  # type: ignore[assignment]
    pipeline: FacePipeline = _worker["pipeline"]  # type: ignore[assignment]
    record, crop = crop_record(pipeline, (folder / rel).read_bytes())
    return {"file": rel} | record, crop


# ---- driver ---------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        "config": config.record(),
    }
    meta_path = out_dir / META_FILE
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
