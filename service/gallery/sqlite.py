"""The embedded gallery: one SQLite file in WAL mode, matching by a numpy matrix product."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from service.gallery.base import Match, Template, TemplateCount, VariantKey

_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    id           INTEGER PRIMARY KEY,
    user_id      TEXT    NOT NULL,
    variant      TEXT    NOT NULL,
    model_sha256 TEXT    NOT NULL,
    model_ref    TEXT    NOT NULL,
    dim          INTEGER NOT NULL,
    embedding    BLOB    NOT NULL,
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS templates_by_variant ON templates (variant, model_sha256, user_id);
CREATE INDEX IF NOT EXISTS templates_by_user ON templates (user_id);
-- Bumped by every write, so each process can tell whether its cached matrices are stale.
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0);
-- Bumped by deletions only: while it stands still, a stale matrix only misses rows with larger ids.
INSERT OR IGNORE INTO meta (key, value) VALUES ('deletions', 0);
"""


# Appended rows are kept in a tail beside the user-grouped base until they outgrow this share of it; then
# the matrix is rebuilt from the database (bench/gallery.py measures both paths).
_TAIL_SHARE = 0.05
_TAIL_MIN = 1024


@dataclass(frozen=True, slots=True)
class _Matrix:
    """All templates of one variant as of one ``generation``.

    The base holds rows grouped by user (rows[starts[i]:starts[i+1]] belong to users[i]); templates added
    since the base was read sit in the tail, each with the index of its user in ``users`` (new users are
    appended). Enrolments extend the tail; a deletion anywhere makes the next search re-read everything.
    """

    generation: int
    deletions: int
    last_id: int  # the largest template id included
    users: list[str]
    user_index: dict[str, int]
    starts: np.ndarray
    embeddings: np.ndarray  # (N, D) float32
    tail_owner: np.ndarray  # (T,) int64 indices into users
    tail: np.ndarray  # (T, D) float32

    def best_per_user(self, query: np.ndarray) -> np.ndarray:
        best = np.full(len(self.users), -np.inf, np.float32)
        if self.embeddings.shape[0]:
            best[: self.starts.size] = np.maximum.reduceat(self.embeddings @ query, self.starts)
        if self.tail_owner.size:
            np.maximum.at(best, self.tail_owner, self.tail @ query)
        return best


class SQLiteGallery:
    """Gallery in one SQLite file.

    One connection per thread (sqlite3 connections must not be shared across threads without a lock, and WAL
    lets readers run beside the single writer). ``synchronous=FULL`` makes an acknowledged enrolment survive
    a power cut, not only a crash. Search keeps one matrix per variant in memory and refreshes it when the
    ``generation`` counter moved, which also notices writes by other worker processes: enrolments are read
    incrementally (rows past the last id seen), a deletion makes it re-read the variant.
    """

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._cache: dict[VariantKey, _Matrix] = {}
        self._cache_lock = threading.Lock()
        self._blas = ThreadpoolController()
        self._blas_lock = threading.Lock()
        self._initialise(self._conn())

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """WAL mode (persistent: recorded in the file) and the schema, safe for workers starting together.

        Switching to WAL needs an exclusive lock, and SQLite answers "database is locked" at once, without
        its busy handler, when another connection holds the file; so retry until the busy timeout passes.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    # ---- connections -------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so close() may close every thread's connection at shutdown;
            # each connection is otherwise used by the thread that opened it.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front: no deadlock from two readers upgrading at once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ---- the Gallery interface ---------------------------------------------------------------------
    def add_templates(self, user_id: str, templates: Sequence[Template]) -> int:
        rows = []
        for template in templates:
            vector = np.ascontiguousarray(template.embedding, dtype=np.float32).reshape(-1)
            rows.append(
                (
                    user_id,
                    template.key.name,
                    template.key.sha256,
                    template.model_ref,
                    vector.size,
                    vector.tobytes(),
                )
            )
        if not rows:
            return 0
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO templates (user_id, variant, model_sha256, model_ref, dim, embedding)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def delete_user(self, user_id: str) -> int:
        with self._write() as conn:
            deleted = conn.execute("DELETE FROM templates WHERE user_id = ?", (user_id,)).rowcount
            if deleted:
                conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'deletions'")
            return deleted

    def count_templates(self, user_id: str) -> list[TemplateCount]:
        rows = self._conn().execute(
            "SELECT variant, model_sha256, MAX(model_ref), COUNT(*) FROM templates WHERE user_id = ?"
            " GROUP BY variant, model_sha256 ORDER BY variant, MAX(model_ref)",
            (user_id,),
        )
        return [TemplateCount(VariantKey(name, sha), ref, count) for name, sha, ref, count in rows]

    def search(self, key: VariantKey, embedding: np.ndarray, top_k: int) -> list[Match]:
        matrix = self._matrix(key)
        if not matrix.users or top_k <= 0:
            return []
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        dim = matrix.embeddings.shape[1] if matrix.embeddings.shape[0] else matrix.tail.shape[1]
        if query.size != dim:
            raise ValueError(f"query has {query.size} dimensions, templates have {dim}")
        # One BLAS thread: the matrix-vector product is memory-bound, and OpenBLAS's own threads on cores
        # that the workers and ONNX Runtime already keep busy turn 0.2 ms into tens of ms at 10k templates
        # (reports/gallery.md). The lock keeps one search from changing the thread count while another's
        # product runs (OpenBLAS does not allow that); a single-threaded product gains nothing from company.
        with self._blas_lock, self._blas.limit(limits=1, user_api="blas"):
            best = matrix.best_per_user(query)
        k = min(top_k, best.size)
        top = np.argpartition(-best, k - 1)[:k]
        top = top[np.argsort(-best[top], kind="stable")]
        return [Match(matrix.users[i], float(best[i])) for i in top]

    def ping(self) -> None:
        self._conn().execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # ---- matching cache ----------------------------------------------------------------------------
    def _matrix(self, key: VariantKey) -> _Matrix:
        conn = self._conn()
        (generation,) = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        cached = self._cache.get(key)
        if cached is not None and cached.generation == generation:
            return cached
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None and cached.generation == generation:
                return cached
            # One read transaction: the counters and the rows come from the same snapshot.
            conn.execute("BEGIN")
            try:
                counters = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                generation, deletions = counters["generation"], counters["deletions"]
                if cached is not None and cached.deletions == deletions:
                    # Only enrolments since: their ids are larger (writes are serialised, ids only grow
                    # while nothing is deleted), so read just those.
                    # The unary + keeps SQLite on the rowid range instead of the variant's whole index.
                    rows = conn.execute(
                        "SELECT id, user_id, dim, embedding FROM templates"
                        " WHERE id > ? AND +variant = ? AND +model_sha256 = ? ORDER BY id",
                        (cached.last_id, key.name, key.sha256),
                    ).fetchall()
                    matrix = _extend(cached, generation, rows)
                else:
                    matrix = None
                if matrix is None:
                    rows = conn.execute(
                        "SELECT id, user_id, dim, embedding FROM templates"
                        " WHERE variant = ? AND model_sha256 = ? ORDER BY user_id, id",
                        (key.name, key.sha256),
                    ).fetchall()
                    matrix = _build_matrix(generation, deletions, rows)
            finally:
                conn.execute("COMMIT")
            self._cache[key] = matrix
            return matrix


def _blobs(rows: list[tuple[int, str, int, bytes]], dim: int) -> np.ndarray:
    return np.frombuffer(b"".join(row[3] for row in rows), dtype=np.float32).reshape(-1, dim)


def _build_matrix(generation: int, deletions: int, rows: list[tuple[int, str, int, bytes]]) -> _Matrix:
    empty = np.zeros(0, np.int64)
    if not rows:
        return _Matrix(
            generation,
            deletions,
            0,
            [],
            {},
            empty,
            np.zeros((0, 0), np.float32),
            empty,
            np.zeros((0, 0), np.float32),
        )
    dim = rows[0][2]
    users: list[str] = []
    starts: list[int] = []
    for index, (_, user_id, _, _) in enumerate(rows):
        if not users or users[-1] != user_id:
            users.append(user_id)
            starts.append(index)
    return _Matrix(
        generation,
        deletions,
        max(row[0] for row in rows),
        users,
        {user: i for i, user in enumerate(users)},
        np.asarray(starts, np.int64),
        _blobs(rows, dim),
        empty,
        np.zeros((0, dim), np.float32),
    )


def _extend(cached: _Matrix, generation: int, rows: list[tuple[int, str, int, bytes]]) -> _Matrix | None:
    """``cached`` plus the enrolled ``rows`` (in id order), or None when a full rebuild is due."""
    if not rows:
        return replace(cached, generation=generation)
    if not cached.users:
        return None
    tail_rows = cached.tail_owner.size + len(rows)
    if tail_rows > max(_TAIL_MIN, _TAIL_SHARE * cached.embeddings.shape[0]):
        return None  # compact: a long tail would slow every search (np.maximum.at is unbuffered)
    users, user_index = cached.users, cached.user_index
    owners = []
    for _, user_id, _, _ in rows:
        index = user_index.get(user_id)
        if index is None:
            # Copy-on-write: searches still reading the old matrix keep consistent lists.
            if users is cached.users:
                users, user_index = list(users), dict(user_index)
            index = user_index[user_id] = len(users)
            users.append(user_id)
        owners.append(index)
    dim = cached.embeddings.shape[1] if cached.embeddings.shape[0] else cached.tail.shape[1]
    return replace(
        cached,
        generation=generation,
        last_id=rows[-1][0],
        users=users,
        user_index=user_index,
        tail_owner=np.concatenate([cached.tail_owner, np.asarray(owners, np.int64)]),
        tail=np.concatenate([cached.tail, _blobs(rows, dim)]),
    )
