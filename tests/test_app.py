from __future__ import annotations

from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def test_health_and_readiness() -> None:
    with TestClient(create_app(Settings())) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "detector": "mtcnn@1"}
