"""The gallery's repository interface: what the routes may ask of any backend (SQLite now, pgvector later)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from faces.embed import Embedder


@dataclass(frozen=True, slots=True)
class VariantKey:
    """Templates are only comparable within one exact model: its name and the sha256 of its weights."""

    name: str
    sha256: str


def gallery_key(embedder: Embedder) -> VariantKey:
    return VariantKey(embedder.manifest.name, embedder.sha256)


@dataclass(frozen=True, slots=True)
class Template:
    key: VariantKey
    model_ref: str  # name@version, for display only (the key is what matching uses)
    embedding: np.ndarray  # (D,) float32, unit length


@dataclass(frozen=True, slots=True)
class TemplateCount:
    key: VariantKey
    model_ref: str
    count: int


@dataclass(frozen=True, slots=True)
class Match:
    user_id: str
    score: float  # best cosine similarity over the user's templates of the searched variant


class Gallery(Protocol):
    """Enrolled templates. Implementations are safe to call from several threads at once (blocking I/O)."""

    def add_templates(self, user_id: str, templates: Sequence[Template]) -> int:
        """Store all templates in one transaction; durable when this returns. Returns how many."""
        ...

    def delete_user(self, user_id: str) -> int:
        """Erase every template of the user (all variants); returns how many were removed."""
        ...

    def count_templates(self, user_id: str) -> list[TemplateCount]:
        """Per-variant template counts of one user (empty if the user is unknown)."""
        ...

    def search(self, key: VariantKey, embedding: np.ndarray, top_k: int) -> list[Match]:
        """The ``top_k`` users with the highest score among templates of ``key`` only, best first."""
        ...

    def ping(self) -> None:
        """Raise if the backend cannot be reached."""
        ...

    def close(self) -> None: ...
