"""Helpers the benchmark scripts share for writing their reports."""

from __future__ import annotations

from pathlib import Path

READING_MARKER = "<!-- reading: kept when the benchmark rewrites this file -->"


def write_with_reading(path: Path, lines: list[str], marker: str = READING_MARKER) -> None:
    """Write a generated report, keeping the hand-written reading below ``marker`` from the previous file."""
    text = path.read_text() if path.exists() else ""
    notes = text.split(marker, 1)[1] if marker in text else "\n"
    path.write_text("\n".join([*lines, "", marker + notes.rstrip("\n")]) + "\n")
