"""Issue 14 over real sockets, in both server modes: ``faceverify serve`` (one uvicorn process) and
``faceverify serve --workers 2`` (gunicorn, uvicorn workers): header limits and timeouts, load shedding,
abandoned work, draining, and the strip image that used to cost a 500 and a reset connection.

Each mode's server runs on a small store (the committed detector and one synthetic embedder) with tight
limits, so that every limit is reached in milliseconds.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from model_store import ModelStore
from tests.api_support import E2E, build_store, encode
from tests.live_server import Server as LiveServer
from tests.live_server import start_server

PHOTO = E2E / "deepface" / "img1.jpg"
MAX_HEADER_BYTES = 4096
HEADER_TIMEOUT = 1.0
KEEP_ALIVE = 1.0
MAX_IN_FLIGHT = 1
DRAIN_DELAY = 3.0


@dataclass
class Server:
    mode: str
    workers: int
    live: LiveServer
    tmpdir: Path

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.live.process

    def connect(self) -> socket.socket:
        host, port = self.base_url.removeprefix("http://").split(":")
        return socket.create_connection((host, int(port)), timeout=10)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    root = tmp_path_factory.mktemp("server-limits-store") / "models"
    return build_store(root, synthetic=["synth-a"], default="synth-a@1", committed_embedders=False)


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def server(
    request: pytest.FixtureRequest, small_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    mode = request.param
    folder = tmp_path_factory.mktemp(f"limits-{mode}")
    tmpdir = folder / "tmp"
    tmpdir.mkdir()
    settings = {
        "TMPDIR": str(tmpdir),  # gunicorn's temporary metrics directory must not outlive it
        "FACEVERIFY_STORE_PATH": str(small_store.root),
        "FACEVERIFY_GALLERY_URL": f"sqlite:///{folder}/gallery.db",
        "FACEVERIFY_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "FACEVERIFY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "FACEVERIFY_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
        "FACEVERIFY_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "FACEVERIFY_IMAGE_WORKERS": "1",
        "FACEVERIFY_DRAIN_DELAY_SECONDS": str(DRAIN_DELAY),
    }
    workers = 2 if mode == "gunicorn" else 1
    log = folder / "server.log"
    live = start_server(
        settings, log, workers=workers, unset=("PROMETHEUS_MULTIPROC_DIR", "FACEVERIFY_INTRA_OP_THREADS")
    )
    srv = Server(mode, workers, live, tmpdir)
    yield srv
    live.stop()
    assert "Traceback" not in log.read_text(), log.read_text()


def read_response(sock: socket.socket, limit: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (or ``limit`` seconds pass)."""
    sock.settimeout(limit)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def content_length(raw: bytes) -> int:
    """The Content-Length of a response's headers (0 while they are incomplete)."""
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def problem_code(raw: bytes) -> str:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), raw[:300]
    return httpx.Response(200, content=body).json()["code"]


# --- 3. header size, count and time ------------------------------------------------------------------


def test_oversized_header_is_431(server: Server) -> None:
    response = httpx.get(f"{server.base_url}/healthz", headers={"X-Big": "a" * 8000}, timeout=10)
    assert response.status_code == 431
    assert response.json()["code"] == "headers_too_large"
    assert response.headers["connection"] == "close"


def test_a_streamed_64_mb_header_is_cut_off_early(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:  # the server closed the connection long before the end
        pass
    raw = read_response(sock)
    assert sent < 16 * 1024 * 1024  # loopback buffers absorb a few MB; the server read one chunk past 4 KB
    assert status_of(raw) in (431, 0)  # 0: the reset overtook the answer in the socket buffers
    if raw:
        assert problem_code(raw) == "headers_too_large"


def test_too_many_header_fields_is_431(server: Server) -> None:
    sock = server.connect()
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    raw = read_response(sock)
    assert status_of(raw) == 431 and problem_code(raw) == "headers_too_large"


def test_slow_and_silent_connections_are_dropped(server: Server) -> None:
    trickling, silent = server.connect(), server.connect()
    start = time.monotonic()
    trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    raw = read_response(trickling)
    assert status_of(raw) == 408 and problem_code(raw) == "request_timeout"
    assert read_response(silent) == b""  # closed without a word: it never said anything
    assert time.monotonic() - start < HEADER_TIMEOUT + 5
    # meanwhile and afterwards, ordinary requests are answered
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200


def test_idle_keep_alive_connection_is_closed(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    first = b""  # the whole first answer: gunicorn's worker sends headers and body in separate writes
    while b"\r\n\r\n" not in first or len(first.partition(b"\r\n\r\n")[2]) < content_length(first):
        first += sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'{"status":"ok"}')
    start = time.monotonic()
    assert read_response(sock) == b""
    assert time.monotonic() - start < KEEP_ALIVE + 3


# --- 1. the strip image over the wire: 422, and the connection stays usable -----------------------------


def test_strip_image_keeps_the_connection(server: Server) -> None:
    strip = encode(Image.new("RGB", (3000, 1), (90, 60, 30)), "PNG")
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        refused = client.post("/v1/identify", files={"image": ("s.png", strip, "image/png")})
        assert refused.status_code == 422 and refused.json()["code"] == "no_face_detected"
        assert refused.headers.get("connection") != "close"
        again = client.post("/v1/identify", files={"image": ("p.jpg", PHOTO.read_bytes(), "image/jpeg")})
        assert again.status_code == 200, again.text


# --- 4. load shedding and abandoned work -----------------------------------------------------------------


def slow_upload(server: Server, length: int = 100_000) -> socket.socket:
    """A POST whose headers arrive and whose body does not: the server has it in flight."""
    sock = server.connect()
    head = (
        "POST /v1/identify HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: multipart/form-data; boundary=xx\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"--xx\r\n")
    return sock


def test_overload_is_shed_with_retry_after(server: Server) -> None:
    holders = [slow_upload(server) for _ in range(6)]
    try:
        time.sleep(0.5)
        answers = []
        for sock in holders:
            sock.settimeout(1.5)
            try:
                answers.append(sock.recv(65536))
            except TimeoutError:
                answers.append(b"")  # admitted: still waiting for its body
        shed = [raw for raw in answers if status_of(raw) == 503]
        # at most MAX_IN_FLIGHT per worker were admitted; each of the others was refused at once
        assert len(shed) >= len(holders) - server.workers * MAX_IN_FLIGHT, answers
        for raw in shed:
            assert b"retry-after: 1" in raw.lower()
            assert problem_code(raw) == "overloaded"
        # probes are never shed
        assert httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200
    finally:
        for sock in holders:
            sock.close()


def metric_total(server: Server, name: str, label: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name) and label in line
    )


def test_work_of_a_departed_client_is_abandoned(server: Server) -> None:
    time.sleep(0.5)  # the shedding test's connections are closed; their slots are free again
    photo = PHOTO.read_bytes()
    detected_before = metric_total(server, "faceverify_stage_duration_seconds_count", 'stage="detect"')
    request = httpx.Request(
        "POST",
        f"{server.base_url}/v1/enroll",
        data={"user_id": "gone"},
        files=[("images", (f"{i}.jpg", photo, "image/jpeg")) for i in range(10)],
    )
    body = request.read()
    sock = server.connect()
    head = f"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += f"Content-Type: {request.headers['content-type']}\r\n\r\n"
    sock.sendall(head.encode() + body)
    time.sleep(0.05)
    sock.close()  # gone before the answer
    deadline = time.monotonic() + 30
    while metric_total(server, "faceverify_errors_total", 'code="client_closed"') < 1:
        assert time.monotonic() < deadline, "the disconnect was never noticed"
        time.sleep(0.2)
    time.sleep(1.0)  # an image that was already running finishes
    detected = (
        metric_total(server, "faceverify_stage_duration_seconds_count", 'stage="detect"') - detected_before
    )
    assert detected < 10  # one image at a time (FACEVERIFY_IMAGE_WORKERS=1): the queued ones never ran
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/v1/users/gone").status_code == 404


# --- 5. draining: readiness 503 while still serving, then a clean exit, nothing left behind ---------------


def test_drain_then_exit(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    start = time.monotonic()
    time.sleep(0.5)
    ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["checks"] == {"shutdown": "draining"}
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
    assert server.process.wait(timeout=DRAIN_DELAY + 30) in (0, -signal.SIGTERM)
    assert time.monotonic() - start >= DRAIN_DELAY - 0.5
    assert not list(server.tmpdir.glob("faceverify-metrics-*"))
