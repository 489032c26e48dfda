"""The SQLite gallery on its own: keys, matching, durability, concurrency (vectors made up here)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from service.gallery import Gallery, SQLiteGallery, Template, VariantKey, open_gallery

A = VariantKey("squeezefacenet", "a" * 64)
A2 = VariantKey("squeezefacenet", "b" * 64)  # same name, re-trained weights
B = VariantKey("pruned", "c" * 64)


def unit(rng: np.random.Generator, dim: int = 128) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    w = v + noise * rng.standard_normal(v.size).astype(np.float32) / np.sqrt(v.size)
    return (w / np.linalg.norm(w)).astype(np.float32)


@pytest.fixture
def gallery(tmp_path: Path) -> SQLiteGallery:
    g = SQLiteGallery(tmp_path / "g.db")
    yield g
    g.close()


def test_is_a_gallery(gallery: SQLiteGallery) -> None:
    typed: Gallery = gallery  # what the routes see
    for name in ("add_templates", "delete_user", "count_templates", "search", "ping", "close"):
        assert callable(getattr(typed, name))


def test_pragmas_wal_and_full_sync(gallery: SQLiteGallery) -> None:
    conn = gallery._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_search_ranks_users_by_best_template(gallery: SQLiteGallery) -> None:
    rng = np.random.default_rng(0)
    people = {f"user{i}": unit(rng) for i in range(20)}
    for user, v in people.items():
        gallery.add_templates(user, [Template(A, "squeezefacenet@1", near(v, rng)) for _ in range(3)])
    probe = near(people["user7"], rng)
    matches = gallery.search(A, probe, top_k=5)
    assert len(matches) == 5
    assert matches[0].user_id == "user7" and matches[0].score > 0.9
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert len({m.user_id for m in matches}) == 5  # one entry per user, not per template
    # the best of the user's templates, checked by brute force
    conn = gallery._conn()
    blobs = conn.execute("SELECT embedding FROM templates WHERE user_id = 'user7'").fetchall()
    best = max(float(np.frombuffer(b, np.float32) @ probe) for (b,) in blobs)
    assert matches[0].score == pytest.approx(best, abs=1e-6)
    assert len(gallery.search(A, probe, top_k=100)) == 20


def test_matching_stays_inside_one_variant(gallery: SQLiteGallery) -> None:
    rng = np.random.default_rng(1)
    v = unit(rng)
    gallery.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    gallery.add_templates("bob", [Template(B, "pruned@1", v)])
    assert [m.user_id for m in gallery.search(A, v, 5)] == ["alice"]
    assert [m.user_id for m in gallery.search(B, v, 5)] == ["bob"]
    # same model name, different weights: no match across them
    assert gallery.search(A2, v, 5) == []


def test_counts_and_delete_every_variant(gallery: SQLiteGallery) -> None:
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


def test_search_cache_follows_writes_from_another_connection(tmp_path: Path) -> None:
    # Two gallery objects on one file stand for two worker processes.
    rng = np.random.default_rng(3)
    one, two = SQLiteGallery(tmp_path / "g.db"), SQLiteGallery(tmp_path / "g.db")
    try:
        v = unit(rng)
        one.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
        assert [m.user_id for m in two.search(A, v, 5)] == ["alice"]  # builds two's cache
        one.delete_user("alice")
        assert two.search(A, v, 5) == []  # two notices the generation moved
        one.add_templates("carol", [Template(A, "squeezefacenet@1", v)])
        assert [m.user_id for m in two.search(A, v, 5)] == ["carol"]
    finally:
        one.close()
        two.close()


def test_enrolment_is_durable_across_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    v = unit(rng)
    g = SQLiteGallery(tmp_path / "g.db")
    g.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    g.close()
    # Nothing lingers in memory: a plain sqlite3 reader sees the row, and a new gallery matches it.
    with sqlite3.connect(tmp_path / "g.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0] == 1
    g = SQLiteGallery(tmp_path / "g.db")
    assert g.search(A, v, 1)[0].score == pytest.approx(1.0, abs=1e-6)
    g.close()


def test_embeddings_are_stored_as_float32_blobs(gallery: SQLiteGallery) -> None:
    v = unit(np.random.default_rng(5))
    gallery.add_templates("alice", [Template(A, "squeezefacenet@1", v)])
    blob, dim = gallery._conn().execute("SELECT embedding, dim FROM templates").fetchone()
    assert dim == 128 and len(blob) == 128 * 4
    assert np.array_equal(np.frombuffer(blob, np.float32), v)


def test_concurrent_writers_and_readers(gallery: SQLiteGallery) -> None:
    rng = np.random.default_rng(6)
    vectors = [unit(rng) for _ in range(8)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                gallery.add_templates(f"u{i}", [Template(A, "squeezefacenet@1", vectors[i])])
                gallery.search(A, vectors[(i + j) % 8], 3)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(c.count for i in range(8) for c in gallery.count_templates(f"u{i}")) == 40
    assert gallery.search(A, vectors[3], 1)[0].user_id == "u3"


def test_failed_write_leaves_nothing(gallery: SQLiteGallery) -> None:
    v = unit(np.random.default_rng(7))
    good = Template(A, "squeezefacenet@1", v)
    bad = Template(VariantKey(None, "d" * 64), "x@1", v)  # type: ignore[arg-type]  # NOT NULL fails mid-batch
    with pytest.raises(sqlite3.IntegrityError):
        gallery.add_templates("alice", [good, bad])
    assert gallery.count_templates("alice") == []  # the first row was rolled back with the batch
    gallery.add_templates("alice", [good])  # and the connection is usable afterwards
    assert gallery.count_templates("alice")[0].count == 1


def test_open_gallery_urls(tmp_path: Path) -> None:
    g = open_gallery(f"sqlite:///{tmp_path}/sub/dir/g.db")  # four slashes: absolute path
    assert isinstance(g, SQLiteGallery) and g.path == tmp_path / "sub/dir/g.db"
    g.ping()
    g.close()
    for url in ("sqlite:///:memory:", "sqlite:///", "postgresql://db/faces", "gallery.db"):
        with pytest.raises(ValueError):
            open_gallery(url)
