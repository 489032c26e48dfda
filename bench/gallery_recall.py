"""HNSW recall@1 against the kind of vectors that fill a large gallery: isotropic, real faces, fitted.

Run:  python bench/gallery_recall.py                 (100k of each kind; resumable)
      python bench/gallery_recall.py --galleries fitted:1000000 --hnsw 32 128 --candidates 100 200
Writes reports/gallery_recall.json, reports/gallery_recall.md and reports/gallery_recall.png.

bench/gallery.py fills its large galleries with isotropic random unit vectors, the hardest case for a graph
index (every direction equally likely: the intrinsic dimension is the embedding's); there pgvector HNSW
reached recall@1 0.812 at 1M templates. A real gallery holds face embeddings, which a face network packs
into a narrower, anisotropic region. This study measures which case the index is in, with three fillers:

- ``isotropic``: bench/gallery.py's vectors;
- ``real``: the default variant's embeddings of the real faces in the training crop cache (one per photo,
  ~100k; the training sources, never LFW), made here with the same ONNX bytes the service runs;
- ``fitted``: unit vectors drawn from a Gaussian with the mean and covariance of the ``real`` ones, at any
  size: a stand-in for a million real faces if it behaved like ``real`` at 100k. It does not (measured: it
  behaves like ``isotropic``; the real embeddings' advantage is local structure, not their second moments);
- ``mixup``: unit vectors between two random real faces (see :func:`mixup`), at any size: the stand-in that
  keeps local structure, trusted at 1M only as far as it matches ``real`` at 100k.

Recall is measured as in bench/gallery.py (whose functions this reuses): the e2e people and LFW identities
planted among the fillers through ``PostgresGallery.add_templates``, each probe's top-1 user from the
service's ``PostgresGallery.search`` (HNSW candidates re-ranked exactly) against exact float64 search over
everything. Index builds run with the background jobs going; each sweep pauses them (bg-pause/bg-resume).
Embeddings are cached under --work (biometric data: never in the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gallery import (  # noqa: E402  # bench/gallery.py, this script's sibling
    DEFAULT_WORK,
    PG_SETTINGS,
    cached_unit_vectors,
    exact_truth,
    fill_postgres,
    paused,
    plant_postgres,
    postgres_complete,
    real_faces,
    recalls,
    run_worker,
    synthetic,
    variant_key,
)
from reporting import write_with_reading  # noqa: E402

from tests.pg_server import PostgresServer  # noqa: E402

KINDS = ("isotropic", "real", "fitted", "mixup")
CROPS = Path(os.environ.get("FACEVERIFY_DATA", Path.home() / ".cache/squeezerfacenet")) / "crops"


def training_embeddings(work: Path, crops_root: Path) -> np.ndarray:
    """The default variant's unit embeddings of every cached training crop (cached per source, resumable)."""
    from faces.embed import Embedder
    from model_store import ModelStore
    from pruning.data.faceset import cache_names, finished_shards, shard_crops
    from service.config import Settings

    settings = Settings()
    store = ModelStore(settings.store_path)
    embedder = Embedder.from_store(store, str(store.resolve(settings.default_variant)))
    folder = work / f"training-embeddings-{embedder.sha256[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for name in cache_names(crops_root):
        path = folder / f"{name}.npy"
        if not path.exists():
            chunks = []
            for shard in finished_shards(crops_root / name):
                crops = shard_crops(crops_root / name, shard)
                chunks += [embedder.embed(np.asarray(crops[i : i + 64])) for i in range(0, len(crops), 64)]
            np.save(path.with_suffix(".tmp.npy"), np.concatenate(chunks).astype(np.float32))
            path.with_suffix(".tmp.npy").rename(path)
            print(f"  embedded {name}", flush=True)
        parts.append(np.load(path))
    return np.concatenate(parts)


def fitted(work: Path, real: np.ndarray, count: int) -> np.ndarray:
    """``count`` unit vectors from N(mean, cov) of ``real``, normalised; memory-mapped, cached."""
    mean = real.astype(np.float64).mean(axis=0)
    chol = np.linalg.cholesky(np.cov(real.astype(np.float64), rowvar=False))
    return cached_unit_vectors(
        work / f"fitted-{count}x{real.shape[1]}-{len(real)}.npy",
        count,
        real.shape[1],
        lambda rng, n: mean + rng.standard_normal((n, real.shape[1])) @ chol.T,
    )


def mixup(work: Path, real: np.ndarray, count: int) -> np.ndarray:
    """``count`` unit vectors, each between two random real faces: normalise(a e_i + (1 - a) e_j), a ~ U(0.2,
    0.8). Unlike ``fitted`` they keep the real embeddings' local structure (each lies on a chord of the face
    manifold), so they can stand in for more faces than exist here once they behave like ``real`` at 100k
    (checked in the report, not assumed). Memory-mapped, cached."""

    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        first = rng.integers(0, len(real), n)
        second = (first + rng.integers(1, len(real), n)) % len(real)  # never the same face twice
        a = rng.uniform(0.2, 0.8, (n, 1))
        return a * real[first] + (1 - a) * real[second]

    return cached_unit_vectors(
        work / f"mixup-{count}x{real.shape[1]}-{len(real)}.npy", count, real.shape[1], draw
    )


def fillers(kind: str, size: int, work: Path, real: np.ndarray) -> np.ndarray:
    if kind == "isotropic":
        return synthetic(work, size, real.shape[1])
    if kind == "real":
        if size > len(real):
            raise SystemExit(f"real: only {len(real)} training faces are cached, not {size}")
        return real[np.random.default_rng(size).permutation(len(real))[:size]]
    if kind == "mixup":
        return mixup(work, real, size)
    return fitted(work, real, size)


def geometry(vectors: np.ndarray, probes: np.ndarray) -> dict[str, float]:
    """How concentrated the fillers are: the mean cosine between two of them, and the mean of every probe's
    best filler score (its closest impostor)."""
    sample = np.asarray(vectors[np.random.default_rng(0).choice(len(vectors), 2000, replace=False)])
    pairs = sample @ sample.T
    best = np.full(len(probes), -np.inf)
    for start in range(0, len(vectors), 100_000):
        best = np.maximum(best, (probes @ np.asarray(vectors[start : start + 100_000]).T).max(axis=1))
    return {
        "mean_pair_cosine": float(pairs[np.triu_indices(len(sample), 1)].mean()),
        "mean_best_filler_score": float(best.mean()),
    }


def _index(row: dict) -> str:
    # Rows measured before the index went to halfvec (service/gallery/postgres.py) carry no "index" field.
    return str(row.get("index", "vector"))


def _build(row: dict) -> tuple[int, int, int, int, str]:
    """What identifies one index build: its gallery and its parameters."""
    return (row["size"], KINDS.index(row["kind"]), row["m"], row["ef_construction"], _index(row))


def _build_key(db: str, index: str) -> str:
    """Key of one index build in the saved results; builds measured before halfvec keep the bare name."""
    return db if index == "vector" else f"{db} ({index})"


def write_report(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "gallery_recall.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = sorted(result["rows"], key=lambda r: (*_build(r), r["candidates"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for key in sorted({_build(r) for r in rows}):
        pts = [r for r in rows if _build(r) == key]
        label = f"{KINDS[key[1]]} {key[0]:,} ({key[4]}, m={key[2]}, ef_c={key[3]})"
        left.plot([r["candidates"] for r in pts], [r["recall_at_1"] for r in pts], "o-", label=label)
        right.plot([r["identify_p50_ms"] for r in pts], [r["recall_at_1"] for r in pts], "o-", label=label)
    for ax, xlabel in ((left, "candidates (hnsw.ef_search)"), (right, "identify p50 ms")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("recall@1 vs exact search")
        ax.axhline(0.99, color="grey", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    right.axvline(20, color="grey", lw=0.8, ls=":")
    fig.tight_layout()
    fig.savefig(out / "gallery_recall.png", dpi=110)

    env = result["environment"]
    lines = [
        "# HNSW recall@1 against what fills the gallery",
        "",
        " then ".join(f"`{c}`" for c in result["commands"])
        + f" ({env['cpus']} CPUs; PostgreSQL {env['postgres']}, pgvector {env['pgvector']}; variant "
        f"{result['variant']}, {result['dim']}-D; {result['planted']} real identities planted, "
        f"{result['probes']} probes; {result['training_faces']:,} real training faces embedded).",
        "",
        "Fillers: `isotropic` = bench/gallery.py's random unit vectors; `real` = the default variant's "
        "embeddings of the training crop cache's real faces; `fitted` = unit vectors from a Gaussian with "
        "the mean and covariance of the `real` ones; `mixup` = unit vectors between two random `real` ones "
        "(normalise(a e_i + (1 - a) e_j), a ~ U(0.2, 0.8)). Geometry: mean cosine between two fillers, and "
        "the mean over probes of the best filler score (the closest impostor). Latency: "
        "`PostgresGallery.search` (HNSW candidates re-ranked exactly, top 5), every probe once per pass "
        "(the last column says how many passes).",
        "",
        "![recall](gallery_recall.png)",
        "",
        "| fillers | templates | filler pair cos | probe's best filler | index | HNSW m / ef_construction "
        "| build s | candidates | identify p50 ms | p99 ms | recall@1 (all / passing) "
        "| exact top-1 is a filler | background, passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g = result["geometry"][f"{r['kind']}:{r['size']}"]
        lines.append(
            f"| {r['kind']} | {r['size']:,} + {result['planted']} | {g['mean_pair_cosine']:.3f} | "
            f"{g['mean_best_filler_score']:.3f} | {_index(r)} | {r['m']} / {r['ef_construction']} | "
            f"{r['index_build_s']:.0f} | {r['candidates']} | {r['identify_p50_ms']:.2f} | "
            f"{r['identify_p99_ms']:.2f} | {r['recall_at_1']:.4f} / {r['recall_at_1_passing']:.4f} | "
            f"{r['filler_top1_share']:.3f} | {'paused' if r['paused'] else 'running (latency inflated)'}, "
            f"{r.get('passes', 1)} pass{'es' if r.get('passes', 1) > 1 else ''} |"
        )
    if result.get("enrolment"):
        lines += [
            "",
            "Enrolment through the index (`PostgresGallery.add_templates`, one template per durable "
            "transaction, 30 in a row, paused window):",
            "",
            "| database (fillers_size_m_ef_construction) | enrolments/s | enrol p50 ms |",
            "|---|---|---|",
        ]
        for db, w in sorted(result["enrolment"].items()):
            lines.append(f"| {db} | {w['enrol_per_s']:.0f} | {w['enrol_p50_ms']:.2f} |")
    marker = "<!-- reading: kept when bench/gallery_recall.py rewrites this file -->"
    write_with_reading(out / "gallery_recall.md", lines, marker)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--galleries",
        nargs="+",
        default=["isotropic:100000", "real:100000", "fitted:100000"],
        help="KIND:SIZE, KIND one of " + ", ".join(KINDS),
    )
    parser.add_argument("--hnsw", type=int, nargs=2, metavar=("M", "EF_CONSTRUCTION"))
    parser.add_argument("--candidates", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--crops", type=Path, default=CROPS)
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--pg-dir", type=Path, default=Path("/var/tmp/faceverify-bench-recall-pg"))
    parser.add_argument("--lfw-identities", type=int, default=500)
    parser.add_argument(
        "--passes", type=int, default=1, help="times each probe is searched per candidate count"
    )
    parser.add_argument("--no-pause", action="store_true")
    args = parser.parse_args()

    from service.gallery import VariantKey
    from service.gallery.postgres import HNSW_EF_CONSTRUCTION, HNSW_M

    m, ef_construction = args.hnsw or (HNSW_M, HNSW_EF_CONSTRUCTION)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    faces = real_faces(work, args.lfw_identities)
    faces_path = work / f"real-faces-{args.lfw_identities}.npz"
    key, ref, dim = variant_key()
    if VariantKey(str(faces["name"]), str(faces["sha256"])) != key:
        raise SystemExit(f"{faces_path} holds another variant's embeddings: remove it")
    real = training_embeddings(work, args.crops)
    print(f"{len(real)} training faces embedded; {len(faces['probes'])} probes", flush=True)
    saved = args.out / "gallery_recall.json"
    result = json.loads(saved.read_text()) if saved.exists() else {}
    if result.get("variant") != ref:
        result = {"rows": [], "geometry": {}, "builds": {}, "commands": []}
    pg = PostgresServer(root=args.pg_dir, settings=PG_SETTINGS, port=0).start()
    try:
        for spec in args.galleries:
            kind, size = spec.split(":")[0], int(spec.split(":")[1])
            if kind not in KINDS:
                raise SystemExit(f"unknown filler kind {kind!r}")
            vectors = fillers(kind, size, work, real)
            result["geometry"][f"{kind}:{size}"] = geometry(vectors, faces["probes"])
            db = f"{kind}_{size}_m{m}_ef{ef_construction}"
            if not postgres_complete(pg, db, size):
                pg.psql(f"DROP DATABASE IF EXISTS {db}", "postgres")
                pg.psql(f"CREATE DATABASE {db}", "postgres")
                print(f"{db}: filling PostgreSQL", flush=True)
                # fill_postgres builds the service's index: halfvec since migration 0002
                result["builds"][_build_key(db, "halfvec")] = fill_postgres(
                    pg.url(db), key, ref, vectors, (m, ef_construction)
                )
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(result, indent=2) + "\n")
            plant_postgres(pg.url(db), key, ref, faces)
            pg.psql("VACUUM ANALYZE templates", db)
            truth, passing = exact_truth(faces, vectors)
            indexdef = pg.psql("SELECT indexdef FROM pg_indexes WHERE indexname LIKE 'templates_hnsw_%'", db)
            index = "halfvec" if "halfvec_cosine_ops" in indexdef else "vector"
            build = _build_key(db, index)
            with paused(f"{db} sweep", not args.no_pause):
                # One untimed pass at the most candidates first: a served index is warm (in shared_buffers),
                # and a cold one would charge its page reads to whichever candidate count ran first.
                warm = f"sweep:{max(args.candidates)}"
                run_worker([warm, pg.url(db), str(faces_path), str(size), "0", "0"])
                for candidates in args.candidates:
                    row = run_worker(
                        [
                            f"sweep:{candidates}:{args.passes}",
                            pg.url(db),
                            str(faces_path),
                            str(size),
                            "0",
                            "0",
                        ]
                    )
                    top1 = row.pop("top1")
                    row.update(
                        kind=kind,
                        m=m,
                        ef_construction=ef_construction,
                        index=index,
                        index_build_s=result["builds"].get(build, {}).get("index_build_s", float("nan")),
                        **recalls(top1, truth, passing),
                        filler_top1_share=float(np.mean([t.startswith("synthetic-") for t in truth])),
                        paused=not args.no_pause,
                        passes=args.passes,
                    )
                    print(f"  {json.dumps(row)}", flush=True)
                    result["rows"] = [
                        r for r in result["rows"] if (_build(r), r["candidates"]) != (_build(row), candidates)
                    ] + [row]
                # Enrolment through the index (each insert searches the graph with ef_construction and links
                # m neighbours): the write cost of the build parameters. After the sweep: it leaves deletions.
                writes = run_worker(["postgres-hnsw", pg.url(db), str(faces_path), str(size), "10", "30"])
                result.setdefault("enrolment", {})[build] = {
                    k: writes[k] for k in ("enrol_per_s", "enrol_p50_ms") if k in writes
                }
            command = "python bench/gallery_recall.py " + " ".join(sys.argv[1:])
            result["commands"] = [*(c for c in result["commands"] if c != command), command]
            result.update(
                variant=ref,
                dim=dim,
                planted=int(faces["gallery"].shape[0]),
                probes=len(faces["probes"]),
                training_faces=len(real),
                environment={
                    "cpus": os.cpu_count(),
                    "postgres": pg.psql("SHOW server_version", "postgres").strip(),
                    "pgvector": pg.psql(
                        "SELECT extversion FROM pg_extension WHERE extname = 'vector'", db
                    ).strip(),
                    "postgres_settings": PG_SETTINGS,
                    "finished": time.strftime("%Y-%m-%d %H:%M"),
                },
            )
            write_report(result, args.out)
    finally:
        pg.stop(delete=False)


if __name__ == "__main__":
    main()
