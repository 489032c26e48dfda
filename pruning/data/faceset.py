"""Read prepared crop caches (+ teacher descriptors) into memory, and split them by identity."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pruning.teacher import teacher_path


@dataclass
class FaceSet:
    crops: np.ndarray  # (N, 112, 112, 3) uint8
    teacher: np.ndarray  # (N, 128) float32, raw dlib descriptors
    identity: np.ndarray  # (N,) str, "" = unknown
    source: np.ndarray  # (N,) str
    file: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.crops)

    def subset(self, mask: np.ndarray) -> FaceSet:
        return FaceSet(
            self.crops[mask], self.teacher[mask], self.identity[mask], self.source[mask], self.file[mask]
        )

    def counts(self) -> dict[str, int]:
        names, counts = np.unique(self.source, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


# The two CelebA sets share the original file numbering; keep the higher-resolution copy of a photo.
_DUPLICATE_OF = {"celeba_small": "celeba_hq"}


@dataclass(frozen=True)
class _Shard:
    """The accepted faces of one prep shard, with celeba_small's copies of celeba_hq photos left out."""

    name: str
    folder: Path
    index: int
    records: list[dict]  # accepted records, in row order
    keep: np.ndarray  # (len(records),) bool


def _shards(crops_root: Path, sources: list[str] | None, *, need_teacher: bool) -> Iterator[_Shard]:
    names = sources or sorted(p.name for p in crops_root.iterdir() if (p / "meta.json").exists())
    seen_files: dict[str, set[str]] = {}
    for name in names:
        folder = crops_root / name
        seen_files[name] = set()
        for index_path in sorted(folder.glob("shard-*.jsonl")):
            shard = int(index_path.stem.split("-")[1])
            if need_teacher and not teacher_path(folder, shard).exists():
                continue
            if not (folder / f"shard-{shard:05d}.npy").exists():  # prep writes the .npy first
                continue
            records = [json.loads(line) for line in index_path.read_text().splitlines()]
            accepted = sorted((r for r in records if "row" in r), key=lambda r: r["row"])
            duplicate_pool = seen_files.get(_DUPLICATE_OF.get(name, ""), set())
            keep = np.array([Path(r["file"]).name not in duplicate_pool for r in accepted], dtype=bool)
            seen_files[name].update(Path(r["file"]).name for r in accepted)
            yield _Shard(name, folder, shard, accepted, keep)


def _identity(records: list[dict]) -> np.ndarray:
    return np.array([r.get("identity") or "" for r in records], dtype=object)


def load_faceset(crops_root: Path, sources: list[str] | None = None) -> FaceSet:
    """Every accepted face that has a teacher descriptor, from the named (default: all) caches."""
    parts: dict[str, list] = {"crops": [], "teacher": [], "identity": [], "source": [], "file": []}
    for shard in _shards(crops_root, sources, need_teacher=True):
        keep = shard.keep
        crops = np.load(shard.folder / f"shard-{shard.index:05d}.npy", mmap_mode="r")
        parts["crops"].append(np.asarray(crops[keep]))
        parts["teacher"].append(np.load(teacher_path(shard.folder, shard.index))[keep])
        parts["identity"].append(_identity(shard.records)[keep])
        parts["source"].append(np.full(int(keep.sum()), shard.name, dtype=object))
        parts["file"].append(np.array([r["file"] for r in shard.records], dtype=object)[keep])
    if not parts["crops"]:
        raise RuntimeError(f"no prepared shards with teacher descriptors under {crops_root}")
    return FaceSet(
        crops=np.concatenate(parts["crops"]),
        teacher=np.concatenate(parts["teacher"]).astype(np.float32),
        identity=np.concatenate(parts["identity"]),
        source=np.concatenate(parts["source"]),
        file=np.concatenate(parts["file"]),
    )


def load_validation(crops_root: Path, sources: list[str] | None = None, fraction: float = 0.1) -> FaceSet:
    """The identity-held-out validation faces only (``validation_mask``), teacher descriptors not needed.

    Reads only the held-out rows of each shard (memory-mapped), so post-training work such as int8
    calibration neither waits for the teacher cache nor loads the training faces. ``teacher`` is (N, 0).
    """
    parts: dict[str, list] = {"crops": [], "identity": [], "source": [], "file": []}
    for shard in _shards(crops_root, sources, need_teacher=False):
        identity = _identity(shard.records)
        rows = np.flatnonzero(shard.keep & validation_mask(identity, fraction))
        if not rows.size:
            continue
        crops = np.load(shard.folder / f"shard-{shard.index:05d}.npy", mmap_mode="r")
        parts["crops"].append(np.asarray(crops[rows]))
        parts["identity"].append(identity[rows])
        parts["source"].append(np.full(rows.size, shard.name, dtype=object))
        parts["file"].append(np.array([shard.records[i]["file"] for i in rows], dtype=object))
    if not parts["crops"]:
        raise RuntimeError(f"no held-out validation faces in the prepared shards under {crops_root}")
    crops = np.concatenate(parts["crops"])
    return FaceSet(
        crops=crops,
        teacher=np.zeros((len(crops), 0), np.float32),
        identity=np.concatenate(parts["identity"]),
        source=np.concatenate(parts["source"]),
        file=np.concatenate(parts["file"]),
    )


def validation_mask(identity: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Hold out a stable ``fraction`` of identities (by hash); unlabelled faces always train.

    Hash-based, so the split never changes when sources are added or the cache is rebuilt.
    """

    def held_out(name: str) -> bool:
        if not name:
            return False
        return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 1000 < fraction * 1000

    return np.array([held_out(str(i)) for i in identity], dtype=bool)
