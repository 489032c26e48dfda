"""Versioned schema of the PostgreSQL gallery: ``NNNN_name.sql`` files applied in order, each exactly once.

Replicas starting together take one session-level advisory lock, so exactly one of them applies a pending
migration and the others wait, then find it recorded. A migration file edited after it was applied is refused
by its checksum (the database would no longer match the code that reads it).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

FOLDER = Path(__file__).parent
# Any fixed 64-bit number; it names this lock among all advisory locks of the database.
LOCK_ID = 0x5146_6163_6547_616C  # "QFaceGal"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The database's schema history does not match the migrations shipped with this code."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped(folder: Path = FOLDER) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name} is not named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3, … without gaps; found {versions}")
    return migrations


def migrate(conn: psycopg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply the pending migrations on an autocommit connection; returns the versions applied here."""
    migrations = shipped() if migrations is None else migrations
    applied_here: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        recorded: dict[int, str] = dict(
            conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
        )
        known = {m.version for m in migrations}
        newer = sorted(set(recorded) - known)
        if newer:
            raise MigrationError(f"the database has migrations {newer} that this code does not know (newer?)")
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise MigrationError(f"migration {migration.name} was changed after it was applied")
                continue
            with conn.transaction():  # a migration applies completely or not at all
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            log.info("applied gallery migration %s", migration.name)
            applied_here.append(migration.version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied_here
