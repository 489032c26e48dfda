"""Gallery backends against gallery size: SQLite + numpy (the embedded default) and PostgreSQL + pgvector
(exact scan, HNSW with exact re-ranking).

Run:  python bench/gallery.py [--sizes 10000 100000 1000000] [--work DIR]
Writes reports/gallery.json, reports/gallery.md and reports/gallery.png.

Per size N (templates of the default variant's dimension): identify latency p50/p99 (``Gallery.search``, the
"match" stage of /v1/identify: the embedding is already made), enrolment throughput (one template per
enrolment, one transaction each, committed durably), the first search after an enrolment and after a
deletion, memory per API process (RSS growth of a fresh process that opened the gallery and searched it),
and HNSW recall@1 against exact search.

Data: N − P synthetic unit vectors (one per synthetic user) with P real templates planted among them: the
default variant's embeddings of real faces, through the service's own pipeline (decode → MTCNN → align →
embed), of the e2e people (tests/data/e2e/bbt, photo 1 enrolled, photos 2–5 probes) and of LFW identities
with two or more photos (the first enrolled, the second a probe). LFW serves only as a retrieval benchmark
here. Real embeddings are cached under --work (biometric data: never in the repository).

Index builds and data loading run with the background jobs going; each measured window pauses them
(bg-pause/bg-resume, under 5 minutes a window) when those commands exist.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import write_with_reading  # noqa: E402  # bench/reporting.py

from service.gallery import (  # noqa: E402
    Gallery,
    PostgresGallery,
    PostgresOptions,
    SQLiteGallery,
    Template,
    VariantKey,
)
from tests.pg_server import PostgresServer  # noqa: E402

LFW = ROOT.parent / "shared/datasets/lfw/images"
BBT = ROOT / "tests/data/e2e/bbt"
DEFAULT_WORK = (
    Path(os.environ.get("FACEVERIFY_DATA", Path.home() / ".cache/squeezerfacenet")) / "bench-gallery"
)
INSERT_SQLITE = (
    "INSERT INTO templates (user_id, variant, model_sha256, model_ref, dim, embedding)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
BACKENDS = ["sqlite", "postgres-exact", "postgres-hnsw"]
NOTES_MARKER = "<!-- reading: kept when bench/gallery.py rewrites this file -->"
PG_SETTINGS = {
    "shared_buffers": "3GB",  # the 1M m=32 index (~1.3 GB) and table (~0.6 GB) stay in PostgreSQL's buffers
    "maintenance_work_mem": "'4GB'",  # the 1M m=32 HNSW graph (~1.7 GB) is built in memory, not on disk
    "max_parallel_maintenance_workers": "1",  # two cores: the leader and one worker
    "max_parallel_workers_per_gather": "1",
    "checkpoint_timeout": "'30min'",
    "max_wal_size": "'4GB'",
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def paused(what: str, enabled: bool = True):  # type: ignore[no-untyped-def]
    """A measured window with the background jobs stopped (always resumed, also on errors)."""
    have = enabled and shutil.which("bg-pause") is not None
    if have:
        subprocess.run(["bg-pause"], check=True, stdout=subprocess.DEVNULL)
    start = time.monotonic()
    try:
        yield
    finally:
        if have:
            subprocess.run(["bg-resume"], check=False, stdout=subprocess.DEVNULL)
        print(f"  [{what}: measured window {time.monotonic() - start:.0f} s]", flush=True)


# ---- real faces ----------------------------------------------------------------------------------------
def real_faces(work: Path, lfw_identities: int) -> dict:
    """Gallery and probe embeddings of real faces with the default variant (cached)."""
    cache = work / f"real-faces-{lfw_identities}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return {k: data[k] for k in data.files}
    from faces.embed import Embedder
    from faces.pipeline import FacePipeline, Timings
    from model_store import ModelStore
    from service.config import Settings
    from service.errors import DomainError

    settings = Settings()
    store = ModelStore(settings.store_path)
    pipeline = FacePipeline.from_spec(settings.preprocess_spec(), store)
    embedder = Embedder.from_store(store, str(store.resolve(settings.default_variant)))

    def embed(path: Path) -> np.ndarray | None:
        try:
            return pipeline.process(path.read_bytes(), [embedder], Timings(embedder.ref)).embeddings[
                embedder.ref
            ]
        except DomainError:
            return None

    people: list[tuple[str, list[Path], list[Path]]] = []
    for person in sorted(p for p in BBT.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.png"))
        people.append((f"bbt:{person.name}", photos[:1], photos[1:]))
    lfw = [d for d in sorted(LFW.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2]
    step = max(1, len(lfw) // lfw_identities)  # spread over the alphabet
    for folder in lfw[::step][:lfw_identities]:
        photos = sorted(folder.glob("*.jpg"))
        people.append((f"lfw:{folder.name}", photos[:1], photos[1:2]))
    users, gallery, probe_users, probes = [], [], [], []
    for index, (user, enrolled, probe_photos) in enumerate(people):
        first = embed(enrolled[0])
        if first is None:
            continue
        users.append(user)
        gallery.append(first)
        for photo in probe_photos:
            e = embed(photo)
            if e is not None:
                probe_users.append(user)
                probes.append(e)
        if index % 50 == 0:
            print(f"  real faces: {index}/{len(people)}", flush=True)
    result = {
        "users": np.asarray(users),
        "gallery": np.stack(gallery).astype(np.float32),
        "probe_users": np.asarray(probe_users),
        "probes": np.stack(probes).astype(np.float32),
        "threshold": np.float32(embedder.threshold(settings.target_fmr)),
        "variant": np.asarray(embedder.ref),
        "sha256": np.asarray(embedder.sha256),
        "name": np.asarray(embedder.manifest.name),
    }
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **result)
    return result


def cached_unit_vectors(
    path: Path, count: int, dim: int, draw: Callable[[np.random.Generator, int], np.ndarray]
) -> np.ndarray:
    """``count`` unit vectors, memory-mapped from ``path``; written once if missing (renamed into place when
    complete) from ``draw(rng, n)``, n raw vectors at a time, with the generator seeded by ``count``."""
    if not path.exists():
        rng = np.random.default_rng(count)
        tmp = path.with_suffix(".tmp.npy")
        out = np.lib.format.open_memmap(tmp, "w+", np.float32, (count, dim))
        for start in range(0, count, 100_000):
            block = draw(rng, min(100_000, count - start))
            out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        out.flush()
        del out
        tmp.rename(path)
    return np.load(path, mmap_mode="r")


def synthetic(work: Path, count: int, dim: int) -> np.ndarray:
    """``count`` random unit vectors (isotropic: every direction equally likely), memory-mapped."""
    return cached_unit_vectors(
        work / f"synthetic-{count}x{dim}.npy",
        count,
        dim,
        lambda rng, n: rng.standard_normal((n, dim)).astype(np.float32),
    )


def exact_truth(faces: dict, noise: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Exact top-1 user of every probe among the planted faces and ``noise`` (numpy, float64), and whether
    that best score passes the FMR 1e-3 threshold."""
    probes = faces["probes"].astype(np.float64)
    scores_real = probes @ faces["gallery"].astype(np.float64).T
    best_real = scores_real.max(axis=1)
    who_real = [str(faces["users"][i]) for i in scores_real.argmax(axis=1)]
    best_noise = np.full(len(probes), -np.inf)
    who_noise = np.zeros(len(probes), np.int64)
    for start in range(0, noise.shape[0], 50_000):
        block = probes @ np.asarray(noise[start : start + 50_000], np.float64).T
        better = block.max(axis=1) > best_noise
        who_noise[better] = start + block.argmax(axis=1)[better]
        best_noise = np.maximum(best_noise, block.max(axis=1))
    truth = [
        w if r >= n else f"synthetic-{who_noise[i]:07d}"
        for i, (w, r, n) in enumerate(zip(who_real, best_real, best_noise, strict=True))
    ]
    return truth, np.maximum(best_real, best_noise) >= float(faces["threshold"])


# ---- filling the stores ----------------------------------------------------------------------------------
def fill_sqlite(path: Path, key: VariantKey, ref: str, faces: dict, noise: np.ndarray) -> float:
    import sqlite3

    sidecar = path.with_suffix(".load.json")  # the load time, kept for a later run that reuses the file
    if path.exists():
        return json.loads(sidecar.read_text())["sqlite_load_s"] if sidecar.exists() else float("nan")
    start = time.perf_counter()
    SQLiteGallery(path).close()  # schema
    dim = noise.shape[1]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")  # bulk load only; the gallery itself writes with FULL
        rows = (
            (str(u), key.name, key.sha256, ref, dim, e.tobytes())
            for u, e in zip(faces["users"], faces["gallery"], strict=True)
        )
        conn.executemany(INSERT_SQLITE, rows)
        conn.executemany(
            INSERT_SQLITE,
            (
                (f"synthetic-{i:07d}", key.name, key.sha256, ref, dim, noise[i].tobytes())
                for i in range(noise.shape[0])
            ),
        )
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
    elapsed = time.perf_counter() - start
    sidecar.write_text(json.dumps({"sqlite_load_s": elapsed}))
    return elapsed


def fill_postgres(
    url: str, key: VariantKey, ref: str, noise: np.ndarray, hnsw: tuple[int, int] | None = None
) -> dict:
    """The synthetic templates by COPY, then the variant's HNSW index built once (faster than growing it row
    by row); the index is the gallery's own definition, with ``hnsw`` = (m, ef_construction) in place of
    the service's build parameters if given. Returns the load and build times."""
    import psycopg
    from pgvector.psycopg import register_vector

    from service.gallery.postgres import HNSW_EF_CONSTRUCTION, HNSW_M, _create_index

    m, ef_construction = hnsw or (HNSW_M, HNSW_EF_CONSTRUCTION)

    gallery = PostgresGallery(url)  # migrations, and the variant with its index, as the service makes them
    try:
        gallery.add_templates("synthetic-0000000", [Template(key, ref, np.asarray(noise[0]))])
    finally:
        gallery.close()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        variant_id, dim = conn.execute(
            "SELECT id, dim FROM variants WHERE name = %s AND model_sha256 = %s", (key.name, key.sha256)
        ).fetchone()
        conn.execute(f"DROP INDEX templates_hnsw_{variant_id}")
        start = time.perf_counter()
        with conn.cursor().copy(
            "COPY templates (user_id, variant_id, model_ref, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "int4", "text", "vector"])
            for i in range(1, noise.shape[0]):
                copy.write_row((f"synthetic-{i:07d}", variant_id, ref, noise[i]))
        conn.execute("ANALYZE templates")
        load = time.perf_counter() - start
        print(f"  loaded {noise.shape[0]} rows in {load:.0f} s; building the HNSW index", flush=True)
        start = time.perf_counter()
        conn.execute(_create_index(variant_id, dim, m, ef_construction))
        build = time.perf_counter() - start
    return {"load_s": load, "index_build_s": build}


def plant_postgres(url: str, key: VariantKey, ref: str, faces: dict) -> None:
    """The real templates, enrolled through the gallery (one transaction each, through the index)."""
    gallery = PostgresGallery(url)
    try:
        if gallery.count_templates(str(faces["users"][0])):
            return
        for user, e in zip(faces["users"], faces["gallery"], strict=True):
            gallery.add_templates(str(user), [Template(key, ref, e)])
    finally:
        gallery.close()


def variant_key() -> tuple[VariantKey, str, int]:
    """The default variant's gallery key, reference and dimension (read from the store, nothing embedded)."""
    from faces.embed import Embedder
    from model_store import ModelStore
    from service.config import Settings
    from service.gallery import gallery_key

    settings = Settings()
    store = ModelStore(settings.store_path)
    embedder = Embedder.from_store(store, str(store.resolve(settings.default_variant)))
    return gallery_key(embedder), embedder.ref, embedder.manifest.output.embedding_dim


def postgres_complete(pg: PostgresServer, db: str, size: int) -> bool:
    if pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'", "postgres").strip() != "1":
        return False
    try:
        rows = int(pg.psql("SELECT COUNT(*) FROM templates", db))
        index = pg.psql("SELECT 1 FROM pg_indexes WHERE indexname LIKE 'templates_hnsw_%'", db).strip()
    except subprocess.CalledProcessError:
        return False
    return rows >= size and index == "1"


# ---- one measurement, in a fresh process (its RSS is one API process's gallery share) ------------------
def sweep(target: str, faces_path: Path, size: int, candidates: int, passes: int = 1) -> dict:
    """HNSW with another candidate count (hnsw.ef_search): every probe ``passes`` times in turn (latency over
    all of them: one pass on a shared machine drifts by ~10 %), top-1 users from the first pass."""
    faces = dict(np.load(faces_path, allow_pickle=False))
    key = VariantKey(str(faces["name"]), str(faces["sha256"]))
    gallery = PostgresGallery(target, PostgresOptions(candidates=candidates, pool_size=1))
    try:
        gallery.search(key, faces["probes"][0], 5)
        times, top1 = [], []
        for turn in range(passes):
            for probe in faces["probes"]:
                t = time.perf_counter()
                matches = gallery.search(key, probe, 5)
                times.append(time.perf_counter() - t)
                if turn == 0:
                    top1.append(matches[0].user_id if matches else "")
    finally:
        gallery.close()
    return {
        "size": size,
        "candidates": candidates,
        "identify_p50_ms": 1e3 * statistics.median(times),
        "identify_p99_ms": 1e3 * percentile(times, 99),
        "top1": top1,
    }


def measure(backend: str, target: str, faces_path: Path, size: int, searches: int, enrolments: int) -> dict:
    faces = dict(np.load(faces_path, allow_pickle=False))
    key = VariantKey(str(faces["name"]), str(faces["sha256"]))
    ref = str(faces["variant"])
    probes = faces["probes"]
    before = rss_mb()
    start = time.perf_counter()
    gallery: Gallery
    if backend == "sqlite":
        gallery = SQLiteGallery(target)
    else:
        gallery = PostgresGallery(
            target, PostgresOptions(search=backend.removeprefix("postgres-"), pool_size=2)
        )  # type: ignore[arg-type]
    first = gallery.search(key, probes[0], 5)
    first_search_s = time.perf_counter() - start
    out: dict = {"backend": backend, "size": size, "open_and_first_search_s": first_search_s}
    out["rss_growth_mb"] = rss_mb() - before
    assert first, "empty gallery"
    # identify latency over the real probes (cycled)
    n = searches if backend != "postgres-exact" else max(10, searches // (1 + size // 20_000))
    top1 = []
    times = []
    for i in range(n):
        probe = probes[i % len(probes)]
        t = time.perf_counter()
        matches = gallery.search(key, probe, 5)
        times.append(time.perf_counter() - t)
        if i < len(probes):
            top1.append(matches[0].user_id if matches else "")
    out["identify_p50_ms"] = 1e3 * statistics.median(times)
    out["identify_p99_ms"] = 1e3 * percentile(times, 99)
    out["identify_n"] = n
    # recall needs every probe once
    if backend == "postgres-hnsw":
        for probe in probes[len(top1) :]:
            matches = gallery.search(key, probe, 5)
            top1.append(matches[0].user_id if matches else "")
    out["top1"] = top1
    # enrolment: one template per enrolment, each its own durable transaction; each followed by a search
    rng = np.random.default_rng(size)
    enrol_times, after_write = [], []
    for i in range(enrolments):
        v = rng.standard_normal(probes.shape[1]).astype(np.float32)
        t = time.perf_counter()
        gallery.add_templates(f"bench-new-{i}", [Template(key, ref, v / np.linalg.norm(v))])
        enrol_times.append(time.perf_counter() - t)
        if backend == "postgres-exact" and i >= 3:
            continue  # nothing cached: the same as any exact search (seconds at 1M)
        t = time.perf_counter()
        gallery.search(key, probes[i % len(probes)], 5)
        after_write.append(time.perf_counter() - t)
    out["enrol_p50_ms"] = 1e3 * statistics.median(enrol_times)
    out["enrol_per_s"] = len(enrol_times) / sum(enrol_times)
    out["first_search_after_enrol_p50_ms"] = 1e3 * statistics.median(after_write)
    out["first_search_after_enrol_max_ms"] = 1e3 * max(after_write)
    # a deletion, then the next search (SQLite re-reads the whole variant: what every write cost before)
    after_delete = []
    rebuilds = 1 if size >= 1_000_000 else 3  # seconds each at 1M (SQLite)
    for i in range(rebuilds):
        gallery.delete_user(f"bench-new-{i}")
        t = time.perf_counter()
        gallery.search(key, probes[i], 5)
        after_delete.append(time.perf_counter() - t)
    out["first_search_after_delete_ms"] = 1e3 * statistics.median(after_delete)
    for i in range(rebuilds, enrolments):
        gallery.delete_user(f"bench-new-{i}")  # leave the gallery as it was
    if backend == "sqlite" and size >= 1_000_000:
        out["write_per_second"] = write_per_second(gallery, key, ref, probes)
    out["rss_after_mb"] = rss_mb()
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gallery.close()
    return out


def write_per_second(
    gallery: Gallery, key: VariantKey, ref: str, probes: np.ndarray, seconds: float = 20
) -> dict:
    """Searches back to back for ``seconds`` while one enrolment lands every second."""
    rng = np.random.default_rng(7)
    times, next_write, writes = [], time.monotonic(), 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if time.monotonic() >= next_write:
            v = rng.standard_normal(probes.shape[1]).astype(np.float32)
            gallery.add_templates(f"bench-wps-{writes}", [Template(key, ref, v / np.linalg.norm(v))])
            writes += 1
            next_write += 1.0
        t = time.perf_counter()
        gallery.search(key, probes[len(times) % len(probes)], 5)
        times.append(time.perf_counter() - t)
    for i in range(writes):
        gallery.delete_user(f"bench-wps-{i}")
    return {
        "seconds": seconds,
        "writes": writes,
        "searches": len(times),
        "search_p50_ms": 1e3 * statistics.median(times),
        "search_p99_ms": 1e3 * percentile(times, 99),
        "search_max_ms": 1e3 * max(times),
    }


def run_worker(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the report ----------------------------------------------------------------------------------------
def recall(top1: list[str], truth: list[str]) -> float:
    return float(np.mean([a == b for a, b in zip(top1, truth, strict=True)]))


def recalls(top1: list[str], truth: list[str], passing: np.ndarray) -> dict[str, float]:
    """recall@1 over every probe, and over the probes whose exact best score passes the threshold."""
    kept = [i for i, p in enumerate(passing) if p]
    return {
        "recall_at_1": recall(top1, truth),
        "recall_at_1_passing": recall([top1[i] for i in kept], [truth[i] for i in kept]),
    }


def write_report(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "gallery.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = result["rows"]
    backends = ["sqlite", "postgres-exact", "postgres-hnsw"]
    labels = {
        "sqlite": "SQLite + numpy",
        "postgres-exact": "PostgreSQL exact",
        "postgres-hnsw": "PostgreSQL HNSW",
    }
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for backend in backends:
        pts = sorted((r["size"], r) for r in rows if r["backend"] == backend)
        if not pts:
            continue
        sizes = [s for s, _ in pts]
        axes[0].plot(sizes, [r["identify_p50_ms"] for _, r in pts], "o-", label=f"{labels[backend]} p50")
        axes[0].plot(sizes, [r["identify_p99_ms"] for _, r in pts], "x--", label=f"{labels[backend]} p99")
        axes[1].plot(sizes, [r["enrol_per_s"] for _, r in pts], "o-", label=labels[backend])
        axes[2].plot(
            sizes,
            [r["first_search_after_enrol_p50_ms"] for _, r in pts],
            "o-",
            label=f"{labels[backend]} after enrol",
        )
        if backend == "sqlite":
            axes[2].plot(
                sizes,
                [r["first_search_after_delete_ms"] for _, r in pts],
                "x--",
                label="SQLite after delete (full re-read)",
            )
    for ax, title, unit in zip(
        axes,
        ("identify (search only)", "enrolment throughput", "first search after a write"),
        ("ms", "enrolments/s", "ms"),
        strict=True,
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("templates in the gallery")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].axhline(20, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    fig.savefig(out / "gallery.png", dpi=110)

    env = result["environment"]
    lines = [
        "# Gallery backends against gallery size",
        "",
        " then ".join(f"`{c}`" for c in result["commands"])
        + f" ({env['cpus']} CPUs, load average before the run {env['loadavg_before']}; "
        f"PostgreSQL {env['postgres']} with pgvector {env['pgvector']}, HNSW m={env['hnsw_m']}, "
        f"ef_construction={env['hnsw_ef_construction']}, candidates (ef_search) {env['candidates']}; "
        f"variant {result['variant']}, {result['dim']}-D).",
        "",
        f"Each gallery holds N synthetic unit vectors (one user each) plus the real faces planted among "
        f"them: {result['planted']} enrolled identities ({result['probes']} probes: e2e people "
        f"and LFW identities). Identify "
        f"is `Gallery.search` alone (top 5), the match stage of /v1/identify; enrolment is one template per "
        f"durable transaction, sequential. Memory is the RSS growth of a fresh process that opened the "
        f"gallery and searched it once (the API process's gallery share; models come on top). Threshold for "
        f'"passing" probes: {result["threshold"]:.4f} (FMR 1e-3).',
        "",
        "![gallery](gallery.png)",
        "",
        "| backend | templates | identify p50 ms | p99 ms | enrol/s | enrol p50 ms "
        "| first search after enrol ms (p50 / max) | after delete ms | open + first search s "
        "| RSS growth MB | recall@1 vs exact (all / passing) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["size"], backends.index(r["backend"]))):
        rec = "" if "recall_at_1" not in r else f"{r['recall_at_1']:.4f} / {r['recall_at_1_passing']:.4f}"
        lines.append(
            f"| {labels[r['backend']]} | {r['size']:,} + {result['planted']} | {r['identify_p50_ms']:.2f} | "
            f"{r['identify_p99_ms']:.2f} | {r['enrol_per_s']:.0f} | {r['enrol_p50_ms']:.2f} | "
            f"{r['first_search_after_enrol_p50_ms']:.2f} / "
            f"{r['first_search_after_enrol_max_ms']:.2f} | {r['first_search_after_delete_ms']:.1f} | "
            f"{r['open_and_first_search_s']:.2f} | {r['rss_growth_mb']:.0f} | {rec} |"
        )
    lines += [
        "",
        "Loading and index builds (background jobs running, not paused):",
        "",
        "| templates | SQLite bulk load s | PostgreSQL COPY s | HNSW build s | table MB | index MB |",
        "|---|---|---|---|---|---|",
    ]
    for size, b in sorted(result["builds"].items(), key=lambda kv: int(kv[0])):
        cells = [b.get(k, float("nan")) for k in ("sqlite_load_s", "load_s", "index_build_s")]
        sizes_mb = [b.get(k, float("nan")) for k in ("table_mb", "index_mb")]
        lines.append(
            f"| {int(size):,} | "
            + " | ".join(f"{c:.1f}" for c in cells)
            + " | "
            + " | ".join(f"{c:.0f}" for c in sizes_mb)
            + " |"
        )
    if result.get("sweep"):
        lines += [
            "",
            "PostgreSQL HNSW against the candidate count (`FACEVERIFY_GALLERY_HNSW_CANDIDATES`, "
            "hnsw.ef_search), every probe once:",
            "",
            "| templates | candidates | identify p50 ms | p99 ms | recall@1 (all / passing) | background |",
            "|---|---|---|---|---|---|",
        ]
        for r in sorted(result["sweep"], key=lambda r: (r["size"], r["candidates"])):
            lines.append(
                f"| {r['size']:,} + {result['planted']} | {r['candidates']} | {r['identify_p50_ms']:.2f} | "
                f"{r['identify_p99_ms']:.2f} | {r['recall_at_1']:.4f} / {r['recall_at_1_passing']:.4f} | "
                f"{'paused' if r['paused'] else 'running (latency inflated)'} |"
            )
    for r in rows:
        if "write_per_second" in r:
            w = r["write_per_second"]
            lines += [
                "",
                f"SQLite at {r['size']:,} templates, one enrolment a second for {w['seconds']:.0f} s while "
                f"searching back to back ({w['writes']} writes, {w['searches']} searches): search p50 "
                f"{w['search_p50_ms']:.1f} ms, p99 {w['search_p99_ms']:.1f} ms, "
                f"max {w['search_max_ms']:.1f} ms (incremental refresh).",
            ]
    write_with_reading(out / "gallery.md", lines, NOTES_MARKER)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="HNSW candidate counts to try")
    parser.add_argument("--prepare", action="store_true", help="only load PostgreSQL and build its indexes")
    parser.add_argument("--no-pause", action="store_true", help="do not pause the background jobs (trials)")
    parser.add_argument("--pg-dir", type=Path, default=Path("/var/tmp/faceverify-bench-gallery-pg"))
    parser.add_argument("--lfw-identities", type=int, default=500)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--enrolments", type=int, default=50)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=BACKENDS,
        help="BACKEND (every size) or BACKEND@SIZE (that size only)",
    )
    parser.add_argument(
        "--worker", nargs=6, metavar=("BACKEND", "TARGET", "FACES", "SIZE", "SEARCHES", "ENROLMENTS")
    )
    args = parser.parse_args()
    if args.worker and args.worker[0].startswith("sweep:"):
        _, target, faces, size, _, _ = args.worker
        _, candidates, *passes = args.worker[0].split(":")  # sweep:CANDIDATES[:PASSES]
        print(
            json.dumps(
                sweep(target, Path(faces), int(size), int(candidates), int(passes[0]) if passes else 1)
            )
        )
        return
    if args.worker:
        backend, target, faces, size, searches, enrolments = args.worker
        print(json.dumps(measure(backend, target, Path(faces), int(size), int(searches), int(enrolments))))
        return

    from service.gallery.postgres import HNSW_EF_CONSTRUCTION, HNSW_M

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    loadavg = os.getloadavg()
    if args.prepare:  # the PostgreSQL loads and index builds alone (they need no real faces)
        key, ref, dim = variant_key()
        pg = PostgresServer(root=args.pg_dir, settings=PG_SETTINGS, port=0).start()
        try:
            builds = work / "builds.json"
            done = json.loads(builds.read_text()) if builds.exists() else {}
            for size in args.sizes:
                db = f"g{size}"
                if not postgres_complete(pg, db, size):
                    pg.psql(f"DROP DATABASE IF EXISTS {db}", "postgres")
                    pg.psql(f"CREATE DATABASE {db}", "postgres")
                    print(f"{size}: filling PostgreSQL", flush=True)
                    done[str(size)] = fill_postgres(pg.url(db), key, ref, synthetic(work, size, dim))
                    builds.write_text(json.dumps(done))
                    print(f"{size}: {done[str(size)]}", flush=True)
        finally:
            pg.stop(delete=False)
        return
    faces = real_faces(work, args.lfw_identities)
    faces_path = work / f"real-faces-{args.lfw_identities}.npz"
    key = VariantKey(str(faces["name"]), str(faces["sha256"]))
    ref = str(faces["variant"])
    dim = faces["gallery"].shape[1]
    planted = faces["gallery"].shape[0]
    print(f"{planted} real identities, {len(faces['probes'])} probes, {dim}-D", flush=True)
    previous = work / "partial.json"
    result = json.loads(previous.read_text()) if previous.exists() else {"rows": [], "builds": {}}
    # The data folder must be reachable by the unprivileged server user (not under /root).
    pg = PostgresServer(root=args.pg_dir, settings=PG_SETTINGS, port=0).start()
    prepared = []
    try:
        for size in args.sizes:
            noise = synthetic(work, size, dim)
            truth, passing = exact_truth(faces, noise)
            build = result["builds"].setdefault(str(size), {})
            sqlite_path = work / f"sqlite-{size}.db"
            load = fill_sqlite(sqlite_path, key, ref, faces, noise)
            if load == load:
                build["sqlite_load_s"] = load
            db = f"g{size}"
            if not postgres_complete(pg, db, size):
                pg.psql(f"DROP DATABASE IF EXISTS {db}", "postgres")
                pg.psql(f"CREATE DATABASE {db}", "postgres")
                print(f"{size}: filling PostgreSQL", flush=True)
                build.update(fill_postgres(pg.url(db), key, ref, noise))
            elif (work / "builds.json").exists():  # built by --prepare
                build.update(json.loads((work / "builds.json").read_text()).get(str(size), {}))
            plant_postgres(pg.url(db), key, ref, faces)
            build["table_mb"] = int(pg.psql("SELECT pg_table_size('templates')", db)) / 2**20
            build["index_mb"] = (
                int(
                    pg.psql(
                        "SELECT pg_relation_size(indexrelid) FROM pg_index"
                        " WHERE indexrelid::regclass::text LIKE 'templates_hnsw_%'",
                        db,
                    ).split()[0]
                )
                / 2**20
            )
            pg.psql("VACUUM ANALYZE templates", db)
            print(f"{size}: {build}", flush=True)
            prepared.append((size, sqlite_path, db, truth, passing))
        if args.sweep:  # recall against the candidate count; latency only indicative unless paused
            with paused(f"sweep {args.sweep}", not args.no_pause):
                for size, _, db, truth, passing in prepared:
                    for candidates in args.sweep:
                        row = run_worker(
                            [f"sweep:{candidates}", pg.url(db), str(faces_path), str(size), "0", "0"]
                        )
                        top1 = row.pop("top1")
                        row.update(recalls(top1, truth, passing))
                        row["paused"] = not args.no_pause
                        print(f"  sweep: {json.dumps(row)}", flush=True)
                        result["sweep"] = [
                            r
                            for r in result.get("sweep", [])
                            if (r["size"], r["candidates"]) != (size, candidates)
                        ] + [row]
                        previous.write_text(json.dumps(result))
            args.backends = []
        # One measured window for every size of this run (bg-pause windows are few and shared).
        with paused(f"sizes {args.sizes}", not args.no_pause and bool(args.backends)):
            for size, sqlite_path, db, truth, passing in prepared:
                for backend in BACKENDS:
                    if backend not in args.backends and f"{backend}@{size}" not in args.backends:
                        continue
                    result["rows"] = [
                        r for r in result["rows"] if (r["size"], r["backend"]) != (size, backend)
                    ]
                    target = str(sqlite_path) if backend == "sqlite" else pg.url(db)
                    row = run_worker(
                        [
                            backend,
                            target,
                            str(faces_path),
                            str(size),
                            str(args.searches),
                            str(args.enrolments),
                        ]
                    )
                    top1 = row.pop("top1")
                    if backend == "postgres-hnsw":
                        row.update(recalls(top1, truth, passing))
                    else:  # exact backends must agree with numpy's float64 truth on the probes they ran
                        row["agrees_with_numpy"] = recall(top1, truth[: len(top1)])
                    print(
                        f"  {backend}: {json.dumps(row)}",
                        flush=True,
                    )
                    result["rows"].append(row)
                previous.write_text(json.dumps(result))
        command = "python bench/gallery.py " + " ".join(sys.argv[1:])
        result["commands"] = [*(c for c in result.get("commands", []) if c != command), command]
        result.update(
            command=command,
            variant=ref,
            dim=dim,
            planted=planted,
            probes=len(faces["probes"]),
            threshold=float(faces["threshold"]),
            environment={
                "cpus": os.cpu_count(),
                "loadavg_before": [round(x, 2) for x in loadavg],
                "python": platform.python_version(),
                "postgres": pg.psql("SHOW server_version", "postgres").strip(),
                "pgvector": pg.psql(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'", f"g{args.sizes[0]}"
                ).strip(),
                "hnsw_m": HNSW_M,
                "hnsw_ef_construction": HNSW_EF_CONSTRUCTION,
                "candidates": PostgresOptions().candidates,
                "postgres_settings": PG_SETTINGS,
            },
        )
    finally:
        pg.stop(delete=False)
    write_report(result, args.out)
    print((args.out / "gallery.md").read_text())


if __name__ == "__main__":
    main()
