"""The service as deployed: ``faceverify serve`` (uvicorn) in a subprocess on loopback, driven with httpx."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from model_store import ModelStore
from tests.api_support import E2E
from tests.live_server import Server, start_server

pytest_plugins = ["tests.api_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "uvicorn-test-key"
SECRET_USER = "uvicorn-secret-user-7319"  # must never appear in the server's logs
BODY_CAP = 2_000_000
PHOTO_A = E2E / "deepface" / "img1.jpg"
PHOTO_B = E2E / "deepface" / "img2.jpg"


@pytest.fixture(scope="module")
def server(mixed_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("uvicorn")
    settings = {
        "FACEVERIFY_STORE_PATH": str(mixed_store.root),
        "FACEVERIFY_GALLERY_URL": f"sqlite:///{folder}/gallery.db",
        "FACEVERIFY_API_KEY": API_KEY,
        "FACEVERIFY_MAX_BODY_BYTES": str(BODY_CAP),
    }
    srv = start_server(settings, folder / "server.log")
    yield srv
    srv.stop()


def photos() -> dict[str, tuple[str, bytes, str]]:
    return {
        "image_a": ("a.jpg", PHOTO_A.read_bytes(), "image/jpeg"),
        "image_b": ("b.jpg", PHOTO_B.read_bytes(), "image/jpeg"),
    }


def test_verify_enrol_identify_delete(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        verified = client.post("/v1/verify", files=photos())
        assert verified.status_code == 200, verified.text
        assert verified.json()["faces"][0]["count"] == 1

        enrolled = client.post(
            "/v1/enroll", data={"user_id": SECRET_USER}, files=[("images", ("a.jpg", PHOTO_A.read_bytes()))]
        )
        assert enrolled.status_code == 201, enrolled.text
        assert client.get(f"/v1/users/{SECRET_USER}").json()["total_templates"] >= 2
        found = client.post("/v1/identify", files={"image": ("a.jpg", PHOTO_A.read_bytes(), "image/jpeg")})
        assert found.json()["candidates"][0]["user_id"] == SECRET_USER
        assert client.delete(f"/v1/users/{SECRET_USER}").status_code == 200
        assert client.delete(f"/v1/users/{SECRET_USER}").status_code == 404
        again = client.post("/v1/identify", files={"image": ("a.jpg", PHOTO_A.read_bytes(), "image/jpeg")})
        assert SECRET_USER not in [c["user_id"] for c in again.json()["candidates"]]


def test_api_key_required(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/v1/verify", files=photos(), timeout=30)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200


def test_body_cap_over_the_wire(server: Server) -> None:
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
        declared = client.post("/v1/verify", files={"image_a": ("a.jpg", b"\xff" * (BODY_CAP + 10))})
        assert declared.status_code == 413 and declared.json()["code"] == "image_too_large"

        def chunks() -> Iterator[bytes]:
            yield b'--xx\r\nContent-Disposition: form-data; name="image_a"; filename="a.jpg"\r\n\r\n'
            for _ in range(5):
                yield b"\xff" * 500_000

        chunked = client.post(
            "/v1/verify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xx"}
        )
        assert "content-length" not in chunked.request.headers
        assert chunked.status_code == 413 and chunked.json()["code"] == "image_too_large"


def test_concurrent_requests(server: Server) -> None:
    files = photos()
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": API_KEY}, timeout=60) as client:

        def call(i: int) -> httpx.Response:
            if i % 4 == 3:  # interleave a failing request: errors must not disturb their neighbours
                return client.post("/v1/verify", files={**files, "image_b": ("b.jpg", b"junk", "image/jpeg")})
            variant = {"X-Model-Variant": "synth-b"} if i % 4 == 2 else {}
            return client.post("/v1/verify", files=files, headers=variant)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(16)))
    assert all(r.status_code < 500 for r in responses)
    assert {r.status_code for i, r in enumerate(responses) if i % 4 == 3} == {400}
    default_scores = {r.json()["score"] for i, r in enumerate(responses) if i % 4 in (0, 1)}
    other_scores = {r.json()["score"] for i, r in enumerate(responses) if i % 4 == 2}
    assert len(default_scores) == 1 and len(other_scores) == 1  # same answer whatever the interleaving

    metrics = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    assert 'faceverify_request_duration_seconds_count{endpoint="/v1/verify"' in metrics
    assert 'faceverify_errors_total{code="invalid_image"}' in metrics


def test_shutdown_is_clean_and_logs_hold_no_user_ids(server: Server) -> None:
    # uvicorn re-raises the signal it handled once shutdown is done, so -SIGTERM is a clean exit too.
    assert server.stop() in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Application shutdown complete" in log  # lifespan's clean-up ran (gallery closed)
    assert "/v1/users/{user_id}" in log  # the access log names route templates...
    assert SECRET_USER not in log  # ...never the ids in the paths
    assert "Traceback" not in log
