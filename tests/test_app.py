from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app
from tests.api_support import COMMITTED_DEFAULT


def test_health_and_readiness(tmp_path: Path) -> None:
    # The committed store with its embedded defaults (only the gallery moved out of the working directory).
    with TestClient(create_app(Settings(gallery_url=f"sqlite:///{tmp_path}/gallery.db"))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        body = ready.json()
        assert body["detector"] == "mtcnn@3"
        assert body["checks"]["detector"] == "ok" and body["checks"]["gallery"] == "ok"
        # Ready exactly when the store's `default` alias names a published embedder.
        assert ready.status_code == (200 if COMMITTED_DEFAULT else 503)
        assert body["default_variant"] == COMMITTED_DEFAULT
