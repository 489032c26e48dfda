"""The gallery contract, run against every backend: SQLite, and a real PostgreSQL + pgvector (HNSW and exact
search). Keys, matching, durability, concurrency; vectors made up here. Backend-specific checks at the end."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import numpy as np
import psycopg
import pytest

from service.gallery import (
    Gallery,
    PostgresGallery,
    PostgresOptions,
    SQLiteGallery,
    Template,
    VariantKey,
    open_gallery,
)
from service.gallery import migrations as gallery_migrations
from tests.conftest import fresh_database
from tests.pg_server import PostgresServer

A = VariantKey("squeezefacenet", "a" * 64)
A2 = VariantKey("squeezefacenet", "b" * 64)  # same name, re-trained weights
B = VariantKey("pruned", "c" * 64)

BACKENDS = ["sqlite", "postgres-hnsw", "postgres-exact"]
Opener = Callable[[], Gallery]  # opens another gallery object on the same store ("another process")


def unit(rng: np.random.Generator, dim: int = 128) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    w = v + noise * rng.standard_normal(v.size).astype(np.float32) / np.sqrt(v.size)
    return (w / np.linalg.norm(w)).astype(np.float32)


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[Gallery] = []
    if request.param == "sqlite":
        url, options = f"sqlite:///{tmp_path}/g.db", None
    else:
        url = fresh_database(request.getfixturevalue("postgres_server"))
        options = PostgresOptions(search=request.param.removeprefix("postgres-"), pool_size=8)  # type: ignore[arg-type]

    def open_one() -> Gallery:
        opened.append(open_gallery(url, options))
        return opened[-1]

    yield open_one
    for g in opened:
        g.close()


@pytest.fixture
def gallery(opener: Opener) -> Gallery:
    return opener()


# ---- the contract --------------------------------------------------------------------------------------
def test_is_a_gallery(gallery: Gallery) -> None:
    for name in ("add_templates", "delete_user", "count_templates", "search", "ping", "close"):
        assert callable(getattr(gallery, name))
    gallery.ping()


def test_search_ranks_users_by_best_template(gallery: Gallery) -> None:
    rng = np.random.default_rng(0)
    people = {f"user{i}": unit(rng) for i in range(20)}
    stored: dict[str, list[np.ndarray]] = {}
    for user, v in people.items():
        stored[user] = [near(v, rng) for _ in range(3)]
        gallery.add_templates(user, [Template(A, "squeezefacenet@1", e) for e in stored[user]])
    probe = near(people["user7"], rng)
    matches = gallery.search(A, probe, top_k=5)
    assert len(matches) == 5
    assert matches[0].user_id == "user7" and matches[0].score > 0.9
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert len({m.user_id for m in matches}) == 5  # one entry per user, not per template
    # the best of each user's templates, checked by brute force
    best = {user: max(float(e @ probe) for e in embeddings) for user, embeddings in stored.items()}
    expected = sorted(best, key=lambda u: -best[u])[:5]
    assert [m.user_id for m in matches] == expected
    for m in matches:
        assert m.score == pytest.approx(best[m.user_id], abs=1e-5)
    assert len(gallery.search(A, probe, top_k=100)) == 20


def test_matching_stays_inside_one_variant(gallery: Gallery) -> None:
    rng = np.random.default_rng(1)
    v = unit(rng)
    gallery.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    gallery.add_templates("bob", [Template(B, "pruned@1", v)])
    assert [m.user_id for m in gallery.search(A, v, 5)] == ["alice"]
    assert [m.user_id for m in gallery.search(B, v, 5)] == ["bob"]
    # same model name, different weights: no match across them
    assert gallery.search(A2, v, 5) == []


def test_variants_of_other_dimensions_live_side_by_side(gallery: Gallery) -> None:
    rng = np.random.default_rng(11)
    small, large = unit(rng, 64), unit(rng, 512)
    gallery.add_templates("alice", [Template(A, "squeezefacenet@1", small), Template(B, "pruned@1", large)])
    assert gallery.search(A, small, 1)[0].score == pytest.approx(1.0, abs=1e-5)
    assert gallery.search(B, large, 1)[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        gallery.search(A, large, 1)


def test_counts_and_delete_every_variant(gallery: Gallery) -> None:
    rng = np.random.default_rng(2)
    gallery.add_templates(
        "alice",
        [Template(A, "squeezefacenet@1", unit(rng)) for _ in range(2)] + [Template(B, "pruned@1", unit(rng))],
    )
    counts = {(c.key, c.model_ref): c.count for c in gallery.count_templates("alice")}
    assert counts == {(A, "squeezefacenet@1"): 2, (B, "pruned@1"): 1}
    assert gallery.count_templates("nobody") == []
    assert gallery.delete_user("alice") == 3
    assert gallery.count_templates("alice") == []
    assert gallery.delete_user("alice") == 0
    assert gallery.search(A, unit(rng), 5) == []


def test_search_follows_writes_from_another_process(opener: Opener) -> None:
    # Two gallery objects on one store stand for two worker processes or two replicas.
    rng = np.random.default_rng(3)
    one, two = opener(), opener()
    v = unit(rng)
    one.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    assert [m.user_id for m in two.search(A, v, 5)] == ["alice"]  # builds two's cache, if it has one
    one.delete_user("alice")
    assert two.search(A, v, 5) == []  # two notices the deletion
    one.add_templates("carol", [Template(A, "squeezefacenet@1", v)])
    assert [m.user_id for m in two.search(A, v, 5)] == ["carol"]
    one.add_templates("dave", [Template(A, "squeezefacenet@1", near(v, rng))])
    assert [m.user_id for m in two.search(A, v, 5)] == ["carol", "dave"]  # appended writes too


def test_enrolment_is_durable_across_reopen(opener: Opener) -> None:
    rng = np.random.default_rng(4)
    v = unit(rng)
    g = opener()
    g.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    g.close()
    again = opener()  # nothing lingers in memory: a new gallery finds and matches the template
    assert again.count_templates("alice")[0].count == 1
    assert again.search(A, v, 1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_concurrent_writers_and_readers(gallery: Gallery) -> None:
    rng = np.random.default_rng(6)
    vectors = [unit(rng) for _ in range(8)]

    def work(i: int) -> None:
        for j in range(5):
            gallery.add_templates(f"u{i}", [Template(A, "squeezefacenet@1", vectors[i])])
            gallery.search(A, vectors[(i + j) % 8], 3)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))  # re-raises any worker's error
    assert sum(c.count for i in range(8) for c in gallery.count_templates(f"u{i}")) == 40
    assert gallery.search(A, vectors[3], 1)[0].user_id == "u3"


def test_concurrent_enrol_and_delete_of_one_user(opener: Opener) -> None:
    # Enrolments and deletions of one user race from two "processes"; every template stored is either
    # removed by exactly one deletion or still there: nothing lost, nothing counted twice, nothing half-done.
    rng = np.random.default_rng(8)
    one, two = opener(), opener()
    v = unit(rng)
    added = [0] * 4
    deleted: list[int] = []
    stop = threading.Event()

    def enrol(worker: int) -> None:
        g = one if worker % 2 else two
        for _ in range(15):
            # two variants in one enrolment: a deletion must never split them
            added[worker] += g.add_templates("eve", [Template(A, "s@1", v), Template(B, "p@1", v)])

    def delete() -> None:
        while not stop.is_set():
            deleted.append((one if len(deleted) % 2 else two).delete_user("eve"))
            # A pause, as between real requests: a writer re-taking SQLite's lock in a tight loop starves
            # the others past their busy timeout (its waiters poll with back-off; there is no queue).
            time.sleep(0.005)

    deleter = threading.Thread(target=delete)
    deleter.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(enrol, range(4)))
    finally:
        stop.set()
        deleter.join()
    remaining = {c.key: c.count for c in one.count_templates("eve")}
    assert sum(added) == 120
    assert sum(deleted) + sum(remaining.values()) == 120
    assert all(d % 2 == 0 for d in deleted)  # each deletion took whole enrolments (A and B together)
    assert remaining.get(A, 0) == remaining.get(B, 0)
    assert (two.search(A, v, 1) != []) == (remaining.get(A, 0) > 0)
    assert two.delete_user("eve") == sum(remaining.values())
    assert one.search(A, v, 5) == [] and one.search(B, v, 5) == []


def test_failed_write_leaves_nothing(gallery: Gallery) -> None:
    v = unit(np.random.default_rng(7))
    good = Template(A, "squeezefacenet@1", v)
    if isinstance(gallery, SQLiteGallery):
        bad = Template(VariantKey(None, "d" * 64), "x@1", v)  # type: ignore[arg-type]  # NOT NULL fails mid-batch
    else:
        bad = Template(A, "squeezefacenet@1", np.full(128, np.nan, np.float32))  # pgvector refuses NaN
    with pytest.raises((sqlite3.IntegrityError, psycopg.DataError)):
        gallery.add_templates("alice", [good, bad])
    assert gallery.count_templates("alice") == []  # the first row was rolled back with the batch
    gallery.add_templates("alice", [good])  # and the connection is usable afterwards
    assert gallery.count_templates("alice")[0].count == 1


# ---- SQLite only ---------------------------------------------------------------------------------------
@pytest.fixture
def sqlite_gallery(tmp_path: Path) -> Iterator[SQLiteGallery]:
    g = SQLiteGallery(tmp_path / "g.db")
    yield g
    g.close()


def test_sqlite_pragmas_wal_and_full_sync(sqlite_gallery: SQLiteGallery) -> None:
    conn = sqlite_gallery._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def _open_at_the_barrier(path: str, barrier: BarrierType) -> None:
    barrier.wait()
    SQLiteGallery(Path(path)).close()


def test_sqlite_workers_opening_a_new_file_together_all_start(tmp_path: Path) -> None:
    # gunicorn's workers open the gallery at the same moment; the first one's switch to WAL must not make
    # another fail with "database is locked" (seen in CI: a worker that failed to boot).
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        path = tmp_path / f"gallery-{attempt}.sqlite3"
        barrier = context.Barrier(6)
        workers = [context.Process(target=_open_at_the_barrier, args=(str(path), barrier)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        assert [w.exitcode for w in workers] == [0] * 6, f"attempt {attempt}"
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_embeddings_are_stored_as_float32_blobs(sqlite_gallery: SQLiteGallery) -> None:
    v = unit(np.random.default_rng(5))
    sqlite_gallery.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    blob, dim = sqlite_gallery._conn().execute("SELECT embedding, dim FROM templates").fetchone()
    assert dim == 128 and len(blob) == 128 * 4
    assert np.array_equal(np.frombuffer(blob, np.float32), v)
    with sqlite3.connect(sqlite_gallery.path) as conn:  # a plain reader sees the committed row
        assert conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 1


def test_open_gallery_urls(tmp_path: Path, postgres_server: PostgresServer) -> None:
    g = open_gallery(f"sqlite:///{tmp_path}/sub/dir/g.db")  # four slashes: absolute path
    assert isinstance(g, SQLiteGallery) and g.path == tmp_path / "sub/dir/g.db"
    g.ping()
    g.close()
    for url in ("sqlite:///:memory:", "sqlite:///", "mysql://db/faces", "gallery.db"):
        with pytest.raises(ValueError):
            open_gallery(url)
    url = fresh_database(postgres_server)
    for spelling in (url, url.replace("postgresql://", "postgres://")):
        pg = open_gallery(spelling)
        assert isinstance(pg, PostgresGallery)
        pg.ping()
        pg.close()


# ---- PostgreSQL only -----------------------------------------------------------------------------------
def test_postgres_replicas_starting_together_migrate_once(postgres_server: PostgresServer) -> None:
    url = fresh_database(postgres_server)
    with ThreadPoolExecutor(6) as pool:
        galleries = list(pool.map(lambda _: PostgresGallery(url), range(6)))
    try:
        versions = postgres_server.psql(
            "SELECT version FROM schema_migrations ORDER BY version", url.rsplit("/", 1)[1]
        )
        assert versions.split() == [str(m.version) for m in gallery_migrations.shipped()]
        # and they register a new variant together without a duplicate row or index
        v = unit(np.random.default_rng(9))
        with ThreadPoolExecutor(6) as pool:
            list(
                pool.map(
                    lambda g: g[1].add_templates(f"u{g[0]}", [Template(A, "s@1", v)]), enumerate(galleries)
                )
            )
        db = url.rsplit("/", 1)[1]
        assert postgres_server.psql("SELECT COUNT(*) FROM variants", db).strip() == "1"
        indexes = postgres_server.psql(
            "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'templates_hnsw_%'", db
        )
        assert len(indexes.split()) == 1
    finally:
        for g in galleries:
            g.close()


def test_postgres_refuses_an_edited_migration(postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = fresh_database(postgres_server)
    PostgresGallery(url).close()
    edited = [
        gallery_migrations.Migration(m.version, m.name, m.sql + "\n-- edited")
        for m in gallery_migrations.shipped()
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(gallery_migrations.MigrationError, match="changed"):
            gallery_migrations.migrate(conn, edited)
        assert gallery_migrations.migrate(conn) == []  # the shipped ones are recorded: nothing to do


def test_postgres_migration_rebuilds_a_full_precision_index_in_halfvec(
    postgres_server: PostgresServer,
) -> None:
    """A gallery made by the first schema (a float32 HNSW index) gets a halfvec index with its own build
    parameters, and its templates are found as before."""
    url = fresh_database(postgres_server)
    rng = np.random.default_rng(12)
    people = [unit(rng) for _ in range(20)]
    with psycopg.connect(url, autocommit=True) as conn:
        gallery_migrations.migrate(conn, gallery_migrations.shipped()[:1])
        conn.execute(
            "INSERT INTO variants (name, model_sha256, dim) VALUES (%s, %s, 128)", [A.name, A.sha256]
        )
        conn.execute(
            "CREATE INDEX templates_hnsw_1 ON templates"
            " USING hnsw ((embedding::vector(128)) vector_cosine_ops)"
            " WITH (m = 8, ef_construction = 40) WHERE variant_id = 1"
        )
        for i, v in enumerate(people):
            conn.execute(
                "INSERT INTO templates (user_id, variant_id, model_ref, embedding) VALUES (%s, 1, 's@1', %s)",
                (f"person{i}", "[" + ",".join(map(str, v)) + "]"),
            )
    gallery = PostgresGallery(url, PostgresOptions(candidates=10))  # applies the pending migrations
    try:
        indexdef = postgres_server.psql(
            "SELECT pg_get_indexdef('templates_hnsw_1'::regclass)", url.rsplit("/", 1)[1]
        )
        assert "halfvec_cosine_ops" in indexdef and "m='8'" in indexdef and "ef_construction='40'" in indexdef
        assert "templates_hnsw_1" in gallery.explain(A, people[3], 1)
        best = gallery.search(A, near(people[3], rng), 1)[0]
        assert best.user_id == "person3"
        # the score is the exact float32 cosine, not the index's half-precision one
        probe = near(people[3], rng)
        assert gallery.search(A, probe, 1)[0].score == pytest.approx(float(probe @ people[3]), abs=1e-5)
    finally:
        gallery.close()


def test_postgres_search_uses_the_hnsw_index_and_agrees_with_exact(postgres_server: PostgresServer) -> None:
    url = fresh_database(postgres_server)
    # 100 candidates: asked for the default 200 out of these 3,041 templates, the planner rightly prefers an
    # exact scan and sort (cheaper at this size; the benchmarks' 100k-1M galleries take the index).
    hnsw = PostgresGallery(url, PostgresOptions(candidates=100))
    exact = PostgresGallery(url, PostgresOptions(search="exact"))
    try:
        rng = np.random.default_rng(10)
        people = [unit(rng) for _ in range(40)]
        with psycopg.connect(url, autocommit=True) as conn:
            hnsw.add_templates("seed", [Template(A, "s@1", unit(rng))])  # registers the variant + its index
            noise = rng.standard_normal((3000, 128)).astype(np.float32)
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            with conn.cursor().copy(
                "COPY templates (user_id, variant_id, model_ref, embedding) FROM STDIN"
            ) as copy:
                for i, row in enumerate(noise):
                    copy.write_row((f"noise{i}", 1, "s@1", "[" + ",".join(map(str, row)) + "]"))
            conn.execute("ANALYZE templates")
        for i, v in enumerate(people):
            hnsw.add_templates(f"person{i}", [Template(A, "s@1", near(v, rng))])
        plan = hnsw.explain(A, people[0], 5)
        assert "templates_hnsw_1" in plan, plan
        assert "templates_hnsw_1" not in exact.explain(A, people[0], 5)
        # more users asked for than the index hands over by default: it is asked for more
        few = PostgresGallery(url, PostgresOptions(candidates=10))
        try:
            wide = few.search(A, people[5], 60)
            assert len(wide) == 60 and len({m.user_id for m in wide}) == 60
            assert wide[0] == hnsw.search(A, people[5], 60)[0]  # approximate further down
        finally:
            few.close()
        for i, v in enumerate(people):
            probe = near(v, rng)
            got, want = hnsw.search(A, probe, 5), exact.search(A, probe, 5)
            assert got[0].user_id == want[0].user_id == f"person{i}"
            assert got[0].score == pytest.approx(want[0].score, abs=1e-6)  # re-ranked by the exact distance
    finally:
        hnsw.close()
        exact.close()


def test_sqlite_cache_appends_enrolments_and_rebuilds_after_deletions(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    writer, reader = SQLiteGallery(tmp_path / "g.db"), SQLiteGallery(tmp_path / "g.db")
    try:
        people = {f"p{i}": unit(rng) for i in range(50)}
        for user, v in people.items():
            writer.add_templates(user, [Template(A, "s@1", v)])
        probe = near(people["p3"], rng)
        reader.search(A, probe, 3)
        base = reader._cache[A]
        # an existing user's second template and a new user: read as a tail, the base arrays untouched
        writer.add_templates("p3", [Template(A, "s@1", probe)])
        writer.add_templates("newcomer", [Template(A, "s@1", near(probe, rng, 0.05))])
        assert [m.user_id for m in reader.search(A, probe, 2)] == ["p3", "newcomer"]
        grown = reader._cache[A]
        assert grown.embeddings is base.embeddings and grown.tail.shape[0] == 2
        assert base.tail.shape[0] == 0 and len(base.users) == 50  # the old matrix was not mutated
        # many more enrolments: past the tail limit the matrix is compacted, results unchanged
        for i in range(11):
            writer.add_templates(f"bulk{i % 3}", [Template(A, "s@1", unit(rng)) for _ in range(100)])
            reader.search(A, probe, 1)
        fresh = SQLiteGallery(tmp_path / "g.db")
        try:
            for v in (probe, *list(people.values())[:10]):
                assert reader.search(A, v, 10) == fresh.search(A, v, 10)
        finally:
            fresh.close()
        assert reader._cache[A].tail.shape[0] < 1100
        # a deletion: the next search re-reads the variant (the user's rows in base and tail are gone)
        writer.delete_user("p3")
        assert "p3" not in [m.user_id for m in reader.search(A, probe, 100)]
        assert reader._cache[A].tail.shape[0] == 0
    finally:
        writer.close()
        reader.close()
