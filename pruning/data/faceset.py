"""Read prepared crop caches (+ teacher descriptors) into memory, and split them by identity.

Teachers: ``"dlib"`` (``teacher-00000.npy``, described from the photo on dlib's own chip) and ``"sface"``
(``teacher-sface-00000.npy``, the cached crop itself, plus ``teacher-sface-mirror-00000.npy`` for its mirror
image where that pass has run). ``teacher=None`` reads the crops alone (validation for a model that needs no
targets, e.g. publishing or calibrating a finished network).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pruning.sface import sface_path
from pruning.teacher import teacher_path

TEACHERS = ("dlib", "sface")


@dataclass
class FaceSet:
    crops: np.ndarray  # (N, 112, 112, 3) uint8
    teacher: np.ndarray  # (N, D) float32 raw teacher descriptors; (N, 0) when read without a teacher
    identity: np.ndarray  # (N,) str, "" = unknown
    source: np.ndarray  # (N,) str
    file: np.ndarray  # (N,) str
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
    names = sources or sorted(p.name for p in crops_root.iterdir() if (p / "meta.json").exists())
    parts: dict[str, list] = {k: [] for k in ("crops", "teacher", "mirror", "identity", "source", "file")}
    seen_files: dict[str, set[str]] = {}
    mirrors_complete = teacher is not None
    for name in names:
        folder = crops_root / name
        seen_files[name] = set()
        for index_path in sorted(folder.glob("shard-*.jsonl")):
            if limit is not None and sum(len(c) for c in parts["crops"]) >= limit:
                break
            shard = int(index_path.stem.split("-")[1])
            descriptor_file, mirror_file = _teacher_files(folder, shard, teacher)
            if descriptor_file is not None and not descriptor_file.exists():
                continue
            records = [json.loads(line) for line in index_path.read_text().splitlines()]
            accepted = sorted((r for r in records if "row" in r), key=lambda r: r["row"])
            identity = np.array([r.get("identity") or "" for r in accepted], dtype=object)
            duplicate_pool = seen_files.get(_DUPLICATE_OF.get(name, ""), set())
            mask = np.array([Path(r["file"]).name not in duplicate_pool for r in accepted], dtype=bool)
            seen_files[name].update(Path(r["file"]).name for r in accepted)
            if keep is not None:
                mask &= np.array([keep(str(i)) for i in identity], dtype=bool)
            if not mask.any():
                continue
            crops = np.load(folder / f"shard-{shard:05d}.npy", mmap_mode="r")
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
    if not parts["crops"]:
        what = f"with {teacher} descriptors " if teacher else ""
        raise RuntimeError(f"no prepared shards {what}under {crops_root}")
    faces = FaceSet(
        crops=np.concatenate(parts["crops"]),
        teacher=np.concatenate(parts["teacher"]).astype(np.float32),
        identity=np.concatenate(parts["identity"]),
        source=np.concatenate(parts["source"]),
        file=np.concatenate(parts["file"]),
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
