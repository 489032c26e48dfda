"""Carry a crop cache to another machine in size-capped, compressed chunks, and rebuild it there.

An accelerator lent for a training run receives at most a few tens of MB a call, and the uint8 crop cache is
~3.9 GB. Each crop is stored as a WebP image (quality 85: ~2.8 kB a face, mean absolute error ~2.6 grey
levels, about JPEG quality 90's error at 60 % of its size, measured on CelebA crops). Lossy transport is
acceptable for training because every crop is then augmented (blur, down-scaling, colour) and, with a live
teacher, the teacher sees the same decoded pixels as the student; published figures are always measured
again on the original cache.

A chunk is one ``.npz`` holding the concatenated image bytes, their offsets, and for every shard it carries
the shard's ``.jsonl`` index and the cache's ``meta.json`` (zlib-compressed JSON), so :func:`unpack` writes
an ordinary cache folder (``pruning.data.faceset`` reads it unchanged). Packing is deterministic: the same
cache gives the same chunks.
"""

from __future__ import annotations

import io
import itertools
import json
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from pruning.data.faceset import META_FILE, atomic_save_npy, cache_names, finished_shards, shard_paths

WEBP_QUALITY = 85


def encode_crops(crops: np.ndarray, quality: int = WEBP_QUALITY) -> list[bytes]:
    from PIL import Image

    out = []
    for crop in crops:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop)).save(buffer, "WEBP", quality=quality, method=4)
        out.append(buffer.getvalue())
    return out


def decode_crops(blob: bytes | np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The (N, H, W, 3) uint8 crops of one shard's concatenated images."""
    from PIL import Image

    data = memoryview(np.frombuffer(blob, np.uint8))
    crops = [
        np.asarray(Image.open(io.BytesIO(data[a:b])).convert("RGB")) for a, b in itertools.pairwise(offsets)
    ]
    return np.stack(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)


def _encode_shard(args: tuple[Path, str, int, int]) -> tuple[str, int, list[bytes]]:
    crops_root, cache, shard, quality = args
    crops = np.load(shard_paths(crops_root / cache, shard)[0], mmap_mode="r")
    return cache, shard, encode_crops(np.asarray(crops), quality)


def pack(
    crops_root: Path,
    out_dir: Path,
    *,
    max_chunk_bytes: int = 50_000_000,
    first_chunk_bytes: int | None = None,
    quality: int = WEBP_QUALITY,
    workers: int = 2,
    caches: list[str] | None = None,
) -> list[Path]:
    """Write ``chunk-000.npz``, ``chunk-001.npz`` … each under ``max_chunk_bytes`` (one shard never splits;
    ``first_chunk_bytes``: a smaller first chunk, to travel beside other files)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = [
        (crops_root, cache, shard, quality)
        for cache in (caches or cache_names(crops_root))
        for shard in finished_shards(crops_root / cache)
    ]
    written: list[Path] = []
    pending: list[tuple[str, int, list[bytes]]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            path = out_dir / f"chunk-{len(written):03d}.npz"
            _write_chunk(path, crops_root, pending)
            written.append(path)
        pending, pending_bytes = [], 0

    with ProcessPoolExecutor(workers) as pool:
        for cache, shard, images in pool.map(_encode_shard, refs):
            size = sum(len(b) for b in images)
            cap = first_chunk_bytes if first_chunk_bytes and not written else max_chunk_bytes
            if pending and pending_bytes + size > cap:
                flush()
            pending.append((cache, shard, images))
            pending_bytes += size
    flush()
    return written


def _write_chunk(path: Path, crops_root: Path, shards: list[tuple[str, int, list[bytes]]]) -> None:
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, (cache, shard, images) in enumerate(shards):
        offsets = np.cumsum([0, *(len(b) for b in images)]).astype(np.int64)
        arrays[f"images_{i}"] = np.frombuffer(b"".join(images), np.uint8)
        arrays[f"offsets_{i}"] = offsets
        folder = crops_root / cache
        index.append(
            {
                "cache": cache,
                "shard": shard,
                "jsonl": shard_paths(folder, shard)[1].read_text(),
                "meta": (folder / META_FILE).read_text(),
            }
        )
    # the shards' .jsonl indexes are ~1.2 MB of text a shard: compressed they cost a fifth of that
    arrays["index"] = np.frombuffer(zlib.compress(json.dumps(index).encode(), 6), np.uint8)
    tmp = path.with_suffix(".tmp.npz")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    tmp.replace(path)


def chunk_shards(path: Path) -> Iterator[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    with np.load(path) as chunk:
        index = json.loads(zlib.decompress(chunk["index"].tobytes()))
        for i, entry in enumerate(index):
            yield entry, chunk[f"images_{i}"], chunk[f"offsets_{i}"]


def _unpack_one(args: tuple[dict[str, str], np.ndarray, np.ndarray, Path]) -> int:
    entry, images, offsets, crops_root = args
    folder = crops_root / entry["cache"]
    folder.mkdir(parents=True, exist_ok=True)
    crops_path, jsonl_path = shard_paths(folder, int(entry["shard"]))
    crops = decode_crops(images.tobytes(), offsets)
    atomic_save_npy(crops_path, crops)
    if not (folder / META_FILE).exists():
        (folder / META_FILE).write_text(entry["meta"])
    jsonl_path.write_text(entry["jsonl"])  # last: marks the shard finished
    return len(crops)


def unpack(chunk: Path, crops_root: Path, workers: int = 8) -> int:
    """Rebuild every shard a chunk carries under ``crops_root``; returns the number of crops."""
    jobs = [(entry, images, offsets, crops_root) for entry, images, offsets in chunk_shards(chunk)]
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(_unpack_one, jobs))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pruning.data.transfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="crop cache → compressed chunks")
    p.add_argument("crops_root", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--max-chunk-mb", type=float, default=50.0)
    p.add_argument("--first-chunk-mb", type=float)
    p.add_argument("--quality", type=int, default=WEBP_QUALITY)
    p.add_argument("--workers", type=int, default=2)
    u = sub.add_parser("unpack", help="chunks → crop cache")
    u.add_argument("chunks", type=Path, nargs="+")
    u.add_argument("--crops-root", type=Path, required=True)
    u.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    if args.command == "pack":
        paths = pack(
            args.crops_root,
            args.out_dir,
            max_chunk_bytes=int(args.max_chunk_mb * 1e6),
            first_chunk_bytes=int(args.first_chunk_mb * 1e6) if args.first_chunk_mb else None,
            quality=args.quality,
            workers=args.workers,
        )
        for path in paths:
            print(f"{path} {path.stat().st_size:,} bytes")
    else:
        for chunk in args.chunks:
            print(f"{chunk}: {unpack(chunk, args.crops_root, args.workers):,} crops")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
