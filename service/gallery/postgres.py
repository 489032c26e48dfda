"""The shared gallery: PostgreSQL with pgvector, one HNSW cosine index per variant, exact re-ranking.

Every replica reads and writes the same tables, and nothing about the templates is cached in the process, so
a write through one replica is seen by the next search on any other.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool

from service.gallery.base import Match, Template, TemplateCount, VariantKey
from service.gallery.migrations import migrate

SearchMode = Literal["hnsw", "exact"]

# The index holds half-precision copies of the embeddings (pgvector's halfvec): at 1M templates it walks
# 7-10 % faster than a full-precision graph at the same candidate count and is a quarter smaller (731 against
# 981 MB), and the candidates are re-ranked by their exact float32 cosine, so scores keep full precision.
# Build parameters: pgvector's defaults (m=16, ef_construction=64) found the exact best match for only 0.972
# of real face probes among 100k real faces at 100 candidates; m=32 0.998. At 1M face-like templates
# ef_construction=256 reaches recall@1 0.99 at 250-300 candidates in 10-12 ms p50 where 128 needs ~500
# candidates and ~20 ms, for inserts about as fast (~90/s) and a build twice as long
# (bench/gallery_recall.py, reports/gallery_1m/gallery_recall.md). Applies to indexes created from now on.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 256
# Serialises the creation of a variant row and its index between replicas (any fixed 64-bit number).
_VARIANT_LOCK_ID = 0x5146_6163_6556_6172  # "QFaceVar"


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    pool_size: int = 4  # connections per process
    search: SearchMode = "hnsw"
    # Templates the HNSW index hands over for exact re-ranking (its hnsw.ef_search, which bounds them).
    candidates: int = 200
    connect_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class _Variant:
    id: int
    dim: int


class PostgresGallery:
    """Gallery in PostgreSQL (psycopg 3, a connection pool; blocking calls, safe from many threads).

    Each enrolment and each deletion is one transaction, committed before the call returns: an acknowledged
    write is durable (``synchronous_commit`` as the server has it, ``on`` by default) and a deletion removes
    every template visible when it runs, in every variant.
    """

    def __init__(self, url: str, options: PostgresOptions | None = None) -> None:
        self.options = options or PostgresOptions()
        self._url = url
        self._variants: dict[VariantKey, _Variant] = {}
        self._variants_lock = threading.Lock()
        # Migrations first, on their own connection: the pool's connections need the vector type to exist.
        with psycopg.connect(url, autocommit=True, connect_timeout=self._timeout) as conn:
            migrate(conn)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=self.options.pool_size,
            kwargs={"autocommit": True, "connect_timeout": self._timeout},
            configure=self._configure,
            open=False,
        )
        self._pool.open(wait=True, timeout=self.options.connect_timeout_s)

    @property
    def _timeout(self) -> int:
        return max(1, round(self.options.connect_timeout_s))

    def _configure(self, conn: psycopg.Connection) -> None:
        register_vector(conn)  # numpy arrays in and out as pgvector's binary format
        if self.options.search == "hnsw":
            # Once per connection, so that a search is one statement (one round trip) in autocommit.
            conn.execute(_hnsw_settings(self.options.candidates, scope="SESSION"))

    # ---- variants ----------------------------------------------------------------------------------
    def _lookup(self, conn: psycopg.Connection, key: VariantKey) -> _Variant | None:
        cached = self._variants.get(key)
        if cached is not None:
            return cached
        row = conn.execute(
            "SELECT id, dim FROM variants WHERE name = %s AND model_sha256 = %s", (key.name, key.sha256)
        ).fetchone()
        if row is None:
            return None  # not cached: another replica may register it any moment
        variant = _Variant(*row)
        with self._variants_lock:
            self._variants[key] = variant
        return variant

    def _register(self, conn: psycopg.Connection, key: VariantKey, dim: int) -> _Variant:
        variant = self._lookup(conn, key)
        if variant is not None:
            return variant
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_VARIANT_LOCK_ID,))
            row = conn.execute(
                "SELECT id, dim FROM variants WHERE name = %s AND model_sha256 = %s", (key.name, key.sha256)
            ).fetchone()
            if row is None:
                inserted = conn.execute(
                    "INSERT INTO variants (name, model_sha256, dim) VALUES (%s, %s, %s) RETURNING id",
                    (key.name, key.sha256, dim),
                ).fetchone()
                assert inserted is not None  # RETURNING always yields the new row
                (variant_id,) = inserted
                conn.execute(_create_index(variant_id, dim))
                row = (variant_id, dim)
        return self._lookup(conn, key) or _Variant(*row)

    # ---- the Gallery interface ---------------------------------------------------------------------
    def add_templates(self, user_id: str, templates: Sequence[Template]) -> int:
        if not templates:
            return 0
        vectors = [np.ascontiguousarray(t.embedding, dtype=np.float32).reshape(-1) for t in templates]
        with self._pool.connection() as conn:
            rows = []
            for template, vector in zip(templates, vectors, strict=True):
                variant = self._register(conn, template.key, vector.size)
                if variant.dim != vector.size:
                    raise ValueError(
                        f"{template.model_ref} embeddings have {variant.dim} dimensions, not {vector.size}"
                    )
                rows.append((user_id, variant.id, template.model_ref, vector))
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO templates (user_id, variant_id, model_ref, embedding)"
                    " VALUES (%s, %s, %s, %s)",
                    rows,
                )
        return len(rows)

    def delete_user(self, user_id: str) -> int:
        with self._pool.connection() as conn, conn.transaction():
            return conn.execute("DELETE FROM templates WHERE user_id = %s", (user_id,)).rowcount

    def count_templates(self, user_id: str) -> list[TemplateCount]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT v.name, v.model_sha256, MAX(t.model_ref), COUNT(*) FROM templates t"
                " JOIN variants v ON v.id = t.variant_id WHERE t.user_id = %s"
                " GROUP BY v.name, v.model_sha256 ORDER BY v.name, MAX(t.model_ref)",
                (user_id,),
            ).fetchall()
        return [TemplateCount(VariantKey(name, sha), ref, count) for name, sha, ref, count in rows]

    def search(self, key: VariantKey, embedding: np.ndarray, top_k: int) -> list[Match]:
        if top_k <= 0:
            return []
        query = np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1)
        with self._pool.connection() as conn:
            variant = self._lookup(conn, key)
            if variant is None:
                return []
            if query.size != variant.dim:
                raise ValueError(f"query has {query.size} dimensions, templates have {variant.dim}")
            params = {"query": query, "k": top_k}
            if self.options.search == "exact":
                rows = conn.execute(_exact_query(variant), params).fetchall()
            else:
                candidates = max(self.options.candidates, top_k)
                statement = _hnsw_query(variant)
                if candidates == self.options.candidates:
                    rows = conn.execute(statement, {**params, "candidates": candidates}).fetchall()
                else:  # more than the session's ef_search: raise it for this transaction only
                    with conn.transaction():
                        conn.execute(_hnsw_settings(candidates, scope="LOCAL"))
                        rows = conn.execute(statement, {**params, "candidates": candidates}).fetchall()
        return [Match(user_id, float(score)) for user_id, score in rows]

    def explain(self, key: VariantKey, embedding: np.ndarray, top_k: int) -> str:
        """The query plan of :meth:`search` (tests check that the HNSW index is used)."""
        query = np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1)
        with self._pool.connection() as conn:
            variant = self._lookup(conn, key)
            if variant is None:
                raise KeyError(key)
            statement = _exact_query(variant) if self.options.search == "exact" else _hnsw_query(variant)
            params = {"query": query, "k": top_k, "candidates": self.options.candidates}
            rows = conn.execute(sql.SQL("EXPLAIN ") + statement, params).fetchall()
        return "\n".join(row[0] for row in rows)

    def ping(self) -> None:
        with self._pool.connection(timeout=self.options.connect_timeout_s) as conn:
            conn.execute("SELECT 1 FROM schema_migrations LIMIT 1")

    def close(self) -> None:
        self._pool.close()


def _vector(dim: int) -> sql.Composable:
    return sql.SQL("vector({})").format(sql.Literal(dim))


def _halfvec(dim: int) -> sql.Composable:
    return sql.SQL("halfvec({})").format(sql.Literal(dim))


def _create_index(
    variant_id: int, dim: int, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> sql.Composed:
    # A partial index per variant: a search touches only the graph of its own model, and variants of other
    # dimensions can share the table (the cast gives the indexed expression the fixed size HNSW needs).
    return sql.SQL(
        "CREATE INDEX {name} ON templates USING hnsw ((embedding::{halfvec}) halfvec_cosine_ops)"
        " WITH (m = {m}, ef_construction = {ef}) WHERE variant_id = {variant}"
    ).format(
        name=sql.Identifier(f"templates_hnsw_{variant_id}"),
        halfvec=_halfvec(dim),
        m=sql.Literal(m),
        ef=sql.Literal(ef_construction),
        variant=sql.Literal(variant_id),
    )


def _hnsw_settings(candidates: int, scope: Literal["SESSION", "LOCAL"]) -> sql.Composed:
    # The index returns at most hnsw.ef_search rows, so it is the candidate count. On a small table the
    # planner prefers a scan and a sort (cheaper by its estimate, and exact); "hnsw" is a deliberate choice
    # of the index, so the scans that would bypass it are switched off. The gallery's other statements
    # (by user id, by variant key) have btree index paths and do not need either.
    return sql.SQL(
        "SET {scope} hnsw.ef_search = {ef}; SET {scope} enable_seqscan = off;"
        " SET {scope} enable_bitmapscan = off"
    ).format(scope=sql.SQL(scope), ef=sql.Literal(candidates))


def _hnsw_query(variant: _Variant) -> sql.Composed:
    # The inner query walks the half-precision index (its ORDER BY … LIMIT is what the planner hands to HNSW);
    # the outer one re-ranks those candidates by their exact float32 cosine distance and keeps each user's
    # best template. The variant id is a literal, not a parameter: a generic plan of a prepared statement
    # could not match it to the partial index's predicate.
    return sql.SQL(
        "SELECT user_id, 1 - MIN(embedding::{vector} <=> %(query)s) AS score FROM ("
        " SELECT user_id, embedding FROM templates WHERE variant_id = {variant}"
        " ORDER BY embedding::{halfvec} <=> %(query)s::{halfvec} LIMIT %(candidates)s"
        ") AS candidates GROUP BY user_id ORDER BY score DESC, user_id LIMIT %(k)s"
    ).format(vector=_vector(variant.dim), halfvec=_halfvec(variant.dim), variant=sql.Literal(variant.id))


def _exact_query(variant: _Variant) -> sql.Composed:
    return sql.SQL(
        "SELECT user_id, 1 - MIN(embedding::{vector} <=> %(query)s) AS score FROM templates"
        " WHERE variant_id = {variant} GROUP BY user_id ORDER BY score DESC, user_id LIMIT %(k)s"
    ).format(vector=_vector(variant.dim), variant=sql.Literal(variant.id))
