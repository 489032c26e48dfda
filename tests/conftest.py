from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from faces.decode import decode_image
from faces.detect import DetectorConfig, MTCNNDetector
from model_store import ModelStore
from tests.pg_server import PostgresServer

# The queue timeout (0.5 s) sheds requests that wait behind others; on a loaded CI machine that would turn
# tests about concurrent answers into tests of the machine's load. The tests of shedding set their own.
os.environ.setdefault("FACEVERIFY_QUEUE_TIMEOUT_SECONDS", "30")

DATA = Path(__file__).parent / "data"
LFW_SAMPLES = sorted((DATA / "lfw").glob("*.jpg"))


@pytest.fixture(scope="session")
def store() -> ModelStore:
    """The committed model store (read-only use)."""
    return ModelStore()


@pytest.fixture(scope="session")
def detector(store: ModelStore) -> MTCNNDetector:
    return MTCNNDetector.from_store(store, "mtcnn", DetectorConfig())


def load_rgb(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels=50_000_000)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL + pgvector for the session; each test takes a new database (``fresh_database``)."""
    with PostgresServer() as server:
        yield server


_databases = itertools.count()


def fresh_database(server: PostgresServer) -> str:
    """A new empty database on the session's server; returns its URL."""
    name = f"t{os.getpid()}_{next(_databases)}"
    server.psql(f"CREATE DATABASE {name}", database="postgres")
    return server.url(name)
