"""Enrolled face templates behind a small repository interface; :func:`open_gallery` picks the backend."""

from __future__ import annotations

from pathlib import Path

from service.gallery.base import Gallery, Match, Template, TemplateCount, VariantKey, gallery_key
from service.gallery.postgres import PostgresGallery, PostgresOptions
from service.gallery.sqlite import SQLiteGallery

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def open_gallery(url: str, postgres: PostgresOptions | None = None) -> Gallery:
    """``sqlite:///relative.db``, ``sqlite:////absolute.db`` or ``postgresql://user:pw@host:port/db``."""
    if url.startswith(_SQLITE_PREFIX):
        path = url.removeprefix(_SQLITE_PREFIX)
        # Each thread opens its own connection, so an in-memory database would be a different one per thread.
        if not path or path.startswith(":memory:"):
            raise ValueError("the SQLite gallery needs a file path, not an in-memory database")
        return SQLiteGallery(Path(path))
    if url.startswith(_POSTGRES_SCHEMES):
        return PostgresGallery("postgresql://" + url.split("://", 1)[1], postgres)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(
        f"unsupported gallery URL scheme {scheme!r}; expected sqlite:///<path> or postgresql://<host>/<db>"
    )


__all__ = [
    "Gallery",
    "Match",
    "PostgresGallery",
    "PostgresOptions",
    "SQLiteGallery",
    "Template",
    "TemplateCount",
    "VariantKey",
    "gallery_key",
    "open_gallery",
]
