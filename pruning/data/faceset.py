"""Read prepared crop caches (+ teacher descriptors) into memory, and split them by identity."""

from __future__ import annotations

import hashlib
import json
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


def load_faceset(crops_root: Path, sources: list[str] | None = None) -> FaceSet:
    """Every accepted face that has a teacher descriptor, from the named (default: all) caches."""
    names = sources or sorted(p.name for p in crops_root.iterdir() if (p / "meta.json").exists())
    parts: dict[str, list] = {"crops": [], "teacher": [], "identity": [], "source": [], "file": []}
    seen_files: dict[str, set[str]] = {}
    for name in names:
        folder = crops_root / name
        seen_files[name] = set()
        for index_path in sorted(folder.glob("shard-*.jsonl")):
            shard = int(index_path.stem.split("-")[1])
            if not teacher_path(folder, shard).exists():
                continue
            records = [json.loads(line) for line in index_path.read_text().splitlines()]
            accepted = sorted((r for r in records if "row" in r), key=lambda r: r["row"])
            crops = np.load(folder / f"shard-{shard:05d}.npy", mmap_mode="r")
            teacher = np.load(teacher_path(folder, shard))
            duplicate_pool = seen_files.get(_DUPLICATE_OF.get(name, ""), set())
            keep = np.array([Path(r["file"]).name not in duplicate_pool for r in accepted], dtype=bool)
            parts["crops"].append(np.asarray(crops[keep]))
            parts["teacher"].append(teacher[keep])
            parts["identity"].append(
                np.array([r.get("identity") or "" for r in accepted], dtype=object)[keep]
            )
            parts["source"].append(np.full(int(keep.sum()), name, dtype=object))
            parts["file"].append(np.array([r["file"] for r in accepted], dtype=object)[keep])
            seen_files[name].update(Path(r["file"]).name for r in accepted)
    if not parts["crops"]:
        raise RuntimeError(f"no prepared shards with teacher descriptors under {crops_root}")
    return FaceSet(
        crops=np.concatenate(parts["crops"]),
        teacher=np.concatenate(parts["teacher"]).astype(np.float32),
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
