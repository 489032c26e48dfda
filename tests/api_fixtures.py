"""Fixtures of the API tests; a test module loads them with ``pytest_plugins = ["tests.api_fixtures"]``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from model_store import ModelStore
from service.main import create_app
from tests.api_support import COMMITTED_DEFAULT, REAL_STORE_ROOT, build_store, make_settings


@pytest.fixture(scope="session")
def mixed_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """Everything the committed store has, plus two synthetic variants; default = the committed default.

    While the committed store has no embedder yet, synth-a stands in as the default so that the plumbing
    (errors, limits, gallery, switching, metrics) is still exercised; face-quality tests never use it.
    """
    root = tmp_path_factory.mktemp("store") / "models"
    return build_store(root, synthetic=["synth-a", "synth-b"], default=COMMITTED_DEFAULT or "synth-a@1")


@pytest.fixture(scope="module")
def client(mixed_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    gallery = tmp_path_factory.mktemp("gallery") / "gallery.db"
    with TestClient(create_app(make_settings(mixed_store.root, gallery))) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def real_store_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The committed store as it is (its default variant), with a fresh gallery."""
    gallery = tmp_path_factory.mktemp("gallery-real") / "gallery.db"
    with TestClient(create_app(make_settings(REAL_STORE_ROOT, gallery))) as client:
        yield client
