"""Enrolled face templates behind a small repository interface; :func:`open_gallery` picks the backend."""

from __future__ import annotations

from pathlib import Path

from service.gallery.base import Gallery, Match, Template, TemplateCount, VariantKey
from service.gallery.sqlite import SQLiteGallery

_SQLITE_PREFIX = "sqlite:///"


def open_gallery(url: str) -> Gallery:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` → a gallery (other schemes: later backends)."""
    if url.startswith(_SQLITE_PREFIX):
        path = url.removeprefix(_SQLITE_PREFIX)
        # Each thread opens its own connection, so an in-memory database would be a different one per thread.
        if not path or path.startswith(":memory:"):
            raise ValueError("the SQLite gallery needs a file path, not an in-memory database")
        return SQLiteGallery(Path(path))
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(f"unsupported gallery URL scheme {scheme!r}; expected sqlite:///<path>")


__all__ = ["Gallery", "Match", "SQLiteGallery", "Template", "TemplateCount", "VariantKey", "open_gallery"]
