"""The crop cache's one owner: its file format, shards, the teacher files beside them, the validation split.

``faceverify prep`` writes a cache through this module, teachers add their files through it, and every
reader (training, publishing, calibration, quantisation, benchmarks) reads through it. Layout of one cache
folder (``<data>/crops/<name>/``)::

    meta.json                        what was prepared, from where, with which ``PreprocessSpec``
    shard-00000.npy                  (n_ok, 112, 112, 3) uint8 crops of the shard's accepted photos
    shard-00000.jsonl                one record per photo: file, identity, status, score, box, landmarks, row
    teacher-00000.npy                dlib descriptors of the shard's accepted faces, in row order
    teacher-sface[-mirror]-00000.npy SFace descriptors of the crops (of their mirror images)

A shard is finished when its ``.jsonl`` exists (written last).

Teachers: ``"dlib"`` (``teacher-00000.npy``, described from the photo on dlib's own chip) and ``"sface"``
(``teacher-sface-00000.npy``, the cached crop itself, plus ``teacher-sface-mirror-00000.npy`` for its mirror
image where that pass has run). ``teacher=None`` reads the crops alone (validation for a model that needs no
targets, e.g. publishing or calibrating a finished network).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faces.quality import yaw_proxy

TEACHERS = ("dlib", "sface")
META_FILE = "meta.json"


# ---- the format ------------------------------------------------------------------------------------
def cache_names(crops_root: Path) -> list[str]:
    """The prepared caches under ``crops_root`` (folders with a meta.json), sorted."""
    return sorted(p.name for p in crops_root.iterdir() if (p / META_FILE).exists())


def read_meta(folder: Path) -> dict[str, object]:
    return json.loads((folder / META_FILE).read_text())


def shard_paths(folder: Path, shard: int) -> tuple[Path, Path]:
    """(crops .npy, index .jsonl) of one shard."""
    return folder / f"shard-{shard:05d}.npy", folder / f"shard-{shard:05d}.jsonl"


def finished_shards(folder: Path) -> list[int]:
    return [int(p.stem.split("-")[1]) for p in sorted(folder.glob("shard-*.jsonl"))]


def shard_records(folder: Path, shard: int) -> list[dict]:
    return [json.loads(line) for line in shard_paths(folder, shard)[1].read_text().splitlines()]


def accepted_records(folder: Path, shard: int) -> list[dict]:
    """The shard's accepted faces' records, in crop-row order (the order of every teacher file too)."""
    return sorted((r for r in shard_records(folder, shard) if "row" in r), key=lambda r: r["row"])


def shard_crops(folder: Path, shard: int) -> np.ndarray:
    """The shard's crops, memory-mapped (read only what is indexed)."""
    return np.load(shard_paths(folder, shard)[0], mmap_mode="r")


def iter_records(folder: Path) -> Iterator[dict[str, object]]:
    """Every photo's record of every finished shard, with its ``shard``."""
    for shard in finished_shards(folder):
        for record in shard_records(folder, shard):
            yield record | {"shard": shard}


def teacher_path(folder: Path, shard: int) -> Path:
    """A shard's dlib descriptors, (N, 128) float32 in row order."""
    return folder / f"teacher-{shard:05d}.npy"


def sface_path(folder: Path, shard: int, *, mirror: bool = False) -> Path:
    """A shard's SFace descriptors, (N, 128) float32 in row order; ``mirror``: of the flipped crops."""
    return folder / f"teacher-sface{'-mirror' if mirror else ''}-{shard:05d}.npy"


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


# ---- reading into memory -----------------------------------------------------------------------------


@dataclass
class FaceSet:
    crops: np.ndarray  # (N, 112, 112, 3) uint8
    teacher: np.ndarray  # (N, D) float32 raw teacher descriptors; (N, 0) when read without a teacher
    identity: np.ndarray  # (N,) str, "" = unknown
    source: np.ndarray  # (N,) str
    file: np.ndarray  # (N,) str
    yaw: np.ndarray  # (N,) float32 yaw proxy of the detected landmarks (faces.quality.yaw_proxy)
    # (N, D) descriptors of the mirror images, when the teacher's cache has them for every face
    teacher_mirror: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, mask: np.ndarray) -> FaceSet:
        mirror = None if self.teacher_mirror is None else self.teacher_mirror[mask]
        return FaceSet(
            self.crops[mask],
            self.teacher[mask],
            self.identity[mask],
            self.source[mask],
            self.file[mask],
            self.yaw[mask],
            mirror,
        )

    def counts(self) -> dict[str, int]:
        names, counts = np.unique(self.source, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


# The two CelebA sets share the original file numbering; keep the higher-resolution copy of a photo.
_DUPLICATE_OF = {"celeba_small": "celeba_hq"}


def _teacher_files(folder: Path, shard: int, teacher: str | None) -> tuple[Path | None, Path | None]:
    if teacher is None:
        return None, None
    if teacher == "dlib":
        return teacher_path(folder, shard), None
    if teacher == "sface":
        return sface_path(folder, shard), sface_path(folder, shard, mirror=True)
    raise ValueError(f"unknown teacher {teacher!r}; known: {', '.join(TEACHERS)}")


def load_faceset(
    crops_root: Path,
    sources: list[str] | None = None,
    *,
    teacher: str | None = "dlib",
    keep: Callable[[str], bool] | None = None,
    limit: int | None = None,
) -> FaceSet:
    """Every accepted face (with the ``teacher``'s descriptor, if one is named) from the named caches.

    ``keep(identity)`` reads only the faces it accepts (e.g. the validation identities) and skips the rest
    without copying their crops into memory; ``limit`` stops after that many faces.
    """
    names = sources or cache_names(crops_root)
    parts: dict[str, list] = {
        k: [] for k in ("crops", "teacher", "mirror", "identity", "source", "file", "yaw")
    }
    seen_files: dict[str, set[str]] = {}
    mirrors_complete = teacher is not None
    for name in names:
        folder = crops_root / name
        seen_files[name] = set()
        for shard in finished_shards(folder):
            if limit is not None and sum(len(c) for c in parts["crops"]) >= limit:
                break
            descriptor_file, mirror_file = _teacher_files(folder, shard, teacher)
            if descriptor_file is not None and not descriptor_file.exists():
                continue
            accepted = accepted_records(folder, shard)
            identity = np.array([r.get("identity") or "" for r in accepted], dtype=object)
            duplicate_pool = seen_files.get(_DUPLICATE_OF.get(name, ""), set())
            mask = np.array([Path(r["file"]).name not in duplicate_pool for r in accepted], dtype=bool)
            seen_files[name].update(Path(r["file"]).name for r in accepted)
            if keep is not None:
                mask &= np.array([keep(str(i)) for i in identity], dtype=bool)
            if not mask.any():
                continue
            crops = shard_crops(folder, shard)
            parts["crops"].append(np.asarray(crops[mask]))
            if descriptor_file is None:
                parts["teacher"].append(np.zeros((int(mask.sum()), 0), np.float32))
            else:
                descriptors = np.load(descriptor_file)
                if descriptors.ndim != 2 or len(descriptors) != len(accepted):
                    raise RuntimeError(
                        f"{descriptor_file}: shape {descriptors.shape} does not fit the shard's "
                        f"{len(accepted)} faces; delete it and rerun `faceverify teacher`"
                    )
                parts["teacher"].append(descriptors[mask])
            if mirror_file is not None and mirror_file.exists():
                parts["mirror"].append(np.load(mirror_file)[mask])
            else:
                mirrors_complete = False
            parts["identity"].append(identity[mask])
            parts["source"].append(np.full(int(mask.sum()), name, dtype=object))
            parts["file"].append(np.array([r["file"] for r in accepted], dtype=object)[mask])
            kept = (r for r, keep_it in zip(accepted, mask, strict=True) if keep_it)
            parts["yaw"].append(np.array([yaw_proxy(r["landmarks"]) for r in kept], np.float32))
    if not parts["crops"]:
        what = f"with {teacher} descriptors " if teacher else ""
        raise RuntimeError(f"no prepared shards {what}under {crops_root}")
    faces = FaceSet(
        crops=np.concatenate(parts["crops"]),
        teacher=np.concatenate(parts["teacher"]).astype(np.float32),
        identity=np.concatenate(parts["identity"]),
        source=np.concatenate(parts["source"]),
        file=np.concatenate(parts["file"]),
        yaw=np.concatenate(parts["yaw"]),
        teacher_mirror=np.concatenate(parts["mirror"]).astype(np.float32) if mirrors_complete else None,
    )
    return faces if limit is None else faces.subset(np.arange(len(faces)) < limit)


def load_validation(crops_root: Path, sources: list[str] | None = None, fraction: float = 0.1) -> FaceSet:
    """Only the held-out identities' crops (no teacher needed): what publishing and calibration read."""
    return load_faceset(crops_root, sources, teacher=None, keep=lambda identity: held_out(identity, fraction))


def held_out(identity: str, fraction: float = 0.1) -> bool:
    """Whether a labelled identity belongs to the validation split (stable hash; unlabelled: never)."""
    if not identity:
        return False
    return int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16) % 1000 < fraction * 1000


def validation_mask(identity: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Hold out a stable ``fraction`` of identities (by hash); unlabelled faces always train.

    Hash-based, so the split never changes when sources are added or the cache is rebuilt.
    """

    return np.array([held_out(str(i), fraction) for i in identity], dtype=bool)
