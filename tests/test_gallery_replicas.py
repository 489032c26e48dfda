"""Stateless replicas and durability, over the wire: real ``faceverify serve`` processes on loopback.

Two API processes on two ports share one real PostgreSQL (enrol through one, identify and delete through the
other), and an API process killed with SIGKILL in the middle of enrolments loses none it acknowledged, on
either backend. The store holds the committed detector and default embedder only, so starts stay short.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from model_store import ModelStore
from service.config import Settings
from service.gallery import open_gallery
from service.main import create_app
from tests.api_support import E2E, REAL_STORE_ROOT, needs_real_model
from tests.conftest import fresh_database
from tests.live_server import Server, start_server
from tests.pg_server import PostgresServer

pytestmark = needs_real_model

ROOT = Path(__file__).resolve().parents[1]
BBT = E2E / "bbt"


@pytest.fixture(scope="module")
def lean_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """The committed detector and default embedder only: one variant to embed per enrolment."""
    committed = ModelStore(REAL_STORE_ROOT)
    root = tmp_path_factory.mktemp("lean-store") / "models"
    store = ModelStore(root)
    root.mkdir(parents=True)
    default = committed.resolve("default")
    for ref in (committed.resolve("mtcnn"), default):
        shutil.copytree(committed.root / ref.name / str(ref.version), root / ref.name / str(ref.version))
    store.set_alias("default", str(default))
    return store


def start_api(store: ModelStore, gallery_url: str, log: Path) -> Server:
    settings = {"FACEVERIFY_STORE_PATH": str(store.root), "FACEVERIFY_GALLERY_URL": gallery_url}
    return start_server(settings, log, ready_within=60)


def photo(person: str, index: int) -> tuple[str, bytes, str]:
    path = BBT / person / f"{person}{index}.png"
    return (path.name, path.read_bytes(), "image/png")


def identify(client: httpx.Client, person: str, index: int) -> list[str]:
    response = client.post("/v1/identify", files={"image": photo(person, index)})
    assert response.status_code == 200, response.text
    return [c["user_id"] for c in response.json()["candidates"]]


@pytest.fixture(scope="module")
def replicas(
    lean_store: ModelStore, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    folder = tmp_path_factory.mktemp("replicas")
    url = fresh_database(postgres_server)
    # Started together: both apply the migrations at start-up; the advisory lock lets one do it.
    with ThreadPoolExecutor(2) as pool:
        one, two = pool.map(lambda i: start_api(lean_store, url, folder / f"api{i}.log"), (1, 2))
    yield one, two
    one.stop()
    two.stop()


def test_two_replicas_share_one_postgres(replicas: tuple[Server, Server]) -> None:
    one, two = replicas
    with one.client() as a, two.client() as b:
        for person in ("penny", "sheldon", "amy"):
            enrolled = a.post("/v1/enroll", data={"user_id": person}, files=[("images", photo(person, 1))])
            assert enrolled.status_code == 201, enrolled.text
        # enrolled through one, found through the other (the enrolled photo itself: score ≈ 1, whatever the
        # model's accuracy on these small grayscale crops)
        assert identify(b, "penny", 1)[:1] == ["penny"]
        assert b.get("/v1/users/sheldon").json()["total_templates"] == 1
        # two answers from the other side, after a write it did not see coming: both see it at once
        assert identify(a, "sheldon", 1)[:1] == ["sheldon"]
        assert b.delete("/v1/users/sheldon").status_code == 200
        assert a.get("/v1/users/sheldon").status_code == 404
        assert "sheldon" not in identify(a, "sheldon", 1)
        assert a.delete("/v1/users/sheldon").status_code == 404
        # a second enrolment through the other replica adds to the same user
        again = b.post("/v1/enroll", data={"user_id": "penny"}, files=[("images", photo("penny", 3))])
        assert again.status_code == 201 and again.json()["total_templates"] == 2
        assert a.get("/v1/users/penny").json()["total_templates"] == 2
        for api in (a, b):
            ready = api.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["gallery"] == "ok"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_mid_enrolment_loses_nothing_acknowledged(
    backend: str, lean_store: ModelStore, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/gallery.db" if backend == "sqlite" else fresh_database(postgres_server)
    api = start_api(lean_store, url, tmp_path / "api.log")
    people = sorted(p.name for p in BBT.iterdir() if p.is_dir())
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def enrol(worker: int) -> None:
        with api.client() as client:
            for n in range(1000):
                if stop.is_set():
                    return
                person = people[(worker + n) % len(people)]
                user = f"{person}-{worker}-{n}"
                try:
                    response = client.post(
                        "/v1/enroll", data={"user_id": user}, files=[("images", photo(person, 1 + n % 5))]
                    )
                except httpx.TransportError:
                    return  # the server died under this request: not acknowledged
                if response.status_code == 201:
                    with lock:
                        acknowledged.append(user)

    workers = [threading.Thread(target=enrol, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    api.process.send_signal(signal.SIGKILL)  # requests are in flight: three workers never pause
    api.process.wait()
    stop.set()
    for w in workers:
        w.join()
    assert len(acknowledged) >= 8, api.log.read_text()
    gallery = open_gallery(url)  # what a restarted replica would read
    try:
        lost = [u for u in acknowledged if not gallery.count_templates(u)]
        assert lost == []
    finally:
        gallery.close()


def test_readyz_reports_an_unreachable_database(
    lean_store: ModelStore, postgres_server: PostgresServer
) -> None:
    url = fresh_database(postgres_server)

    app = create_app(Settings(store_path=lean_store.root, gallery_url=url, gallery_pool_size=1))
    with TestClient(app) as client:
        assert client.get("/readyz").json()["checks"]["gallery"] == "ok"
        postgres_server.psql(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)", database="postgres")
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["gallery"] == "unreachable"
