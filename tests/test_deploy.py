"""The deployment without a Docker engine: the multi-worker service and a real Prometheus on loopback, and the
shipped Prometheus, Grafana and compose files checked against the service.

The image build itself cannot be checked here (no Docker engine); ``docker-compose.yml`` is checked for its
structure and for every file it mounts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "faceverify.json"
LFW = sorted((Path(__file__).parent / "data" / "lfw").glob("*.jpg"))
WORKERS = 2
REQUEST_METRIC = "faceverify_request_duration_seconds"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(ready: object, what: str, process: subprocess.Popen[bytes], log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while True:
        assert process.poll() is None, f"{what} exited:\n{log.read_text()}"
        try:
            if ready():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} not ready within {limit} s:\n{log.read_text()}"
        time.sleep(0.2)


@dataclass
class Service:
    base_url: str
    port: int
    metrics_dir: Path
    sent: int  # /v1 requests answered before the tests look


def verify_files(a: Path, b: Path) -> dict[str, tuple[str, bytes, str]]:
    return {
        "image_a": (a.name, a.read_bytes(), "image/jpeg"),
        "image_b": (b.name, b.read_bytes(), "image/jpeg"),
    }


def verify(base_url: str, a: Path, b: Path) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/verify", files=verify_files(a, b), headers={"Connection": "close"}, timeout=60
    )


@contextmanager
def multi_worker_service(folder: Path) -> Iterator[tuple[str, int, Path, subprocess.Popen[bytes], Path]]:
    """``faceverify serve --workers 2`` on loopback, ready; stopped (SIGTERM, bounded) on exit."""
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # a previous run's file: the master must wipe it
    port = free_port()
    env = {
        **os.environ,
        "FACEVERIFY_GALLERY_URL": f"sqlite:///{folder}/gallery.db",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    env.pop("FACEVERIFY_API_KEY", None)
    env.pop("FACEVERIFY_INTRA_OP_THREADS", None)  # derived from the worker count
    log = folder / "server.log"
    command = [sys.executable, "-m", "faceverify.cli", "serve", "--workers", str(WORKERS)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200, "service", process, log, 90
        )
        yield base_url, port, metrics_dir, process, log
    finally:
        stop(process)
    assert process.returncode == 0, log.read_text()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The 2-worker service; real photos verified until both workers answered some."""
    with multi_worker_service(tmp_path_factory.mktemp("deploy")) as (base_url, port, metrics_dir, _, log):
        # One refused photo so that the error counter has a sample too.
        bad = httpx.post(
            f"{base_url}/v1/verify", files={"image_a": ("a.jpg", b"not an image", "image/jpeg")}, timeout=60
        )
        assert bad.status_code in (400, 415, 422), bad.text
        sent = 1
        # Concurrent requests, each on a new connection (a kept-alive one stays with its worker); keep going,
        # bounded, until both workers have answered some.
        deadline = time.monotonic() + 60
        round_ = 0
        while len(pids(metrics_dir, "histogram")) < WORKERS:
            assert time.monotonic() < deadline, (
                f"requests never reached {WORKERS} workers:\n{log.read_text()}"
            )
            pairs = [(LFW[(round_ + i) % len(LFW)], LFW[(round_ + i + 1) % len(LFW)]) for i in range(4)]
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda pair: verify(base_url, *pair), pairs))
            assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
            sent += len(answers)
            round_ += 4
        yield Service(base_url, port, metrics_dir, sent)
    text = log.read_text()
    assert "ONNX Runtime threads" in text  # the master's summary line
    assert "service.access" in text  # the workers log the service's own access lines
    assert 'HTTP/1.1"' not in text  # and uvicorn's, with raw paths (user ids), stay off


def test_a_dead_worker_is_replaced_and_marked_dead(tmp_path: Path) -> None:
    with multi_worker_service(tmp_path) as (base_url, _, metrics_dir, process, log):
        deadline = time.monotonic() + 30
        while len(pids(metrics_dir, "gauge_livemax")) < WORKERS:  # each worker sets its gauge at start-up
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert not (metrics_dir / "counter_1.db").exists(), "the master did not wipe the metrics directory"
        victim = min(pids(metrics_dir, "gauge_livemax"))
        os.kill(victim, signal.SIGKILL)  # a worker of the server this test started
        # gunicorn's child_exit hook removes its live gauge file; a new worker starts and writes its own.
        wait_until(
            lambda: (
                victim not in pids(metrics_dir, "gauge_livemax")
                and len(pids(metrics_dir, "gauge_livemax")) == WORKERS
            ),
            "a replaced worker",
            process,
            log,
            60,
        )
        wait_until(
            lambda: httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200, "service", process, log, 30
        )
        info = [
            line
            for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines()
            if line.startswith("faceverify_model_info{")
        ]
        assert len(info) == len(set(info)) >= 1


def pids(metrics_dir: Path, kind: str) -> set[int]:
    return {
        int(m.group(1)) for f in metrics_dir.iterdir() if (m := re.fullmatch(rf"{kind}_(\d+)\.db", f.name))
    }


def requests_per_worker(metrics_dir: Path, scratch: Path) -> dict[int, float]:
    """Each worker's own request count, read from its histogram file alone."""
    counts = {}
    for pid in pids(metrics_dir, "histogram"):
        alone = scratch / str(pid)
        alone.mkdir(parents=True)
        shutil.copy(metrics_dir / f"histogram_{pid}.db", alone)
        counts[pid] = sum(
            sample.value
            for family in MultiProcessCollector(None, path=str(alone)).collect()
            for sample in family.samples
            if sample.name == f"{REQUEST_METRIC}_count"
        )
    return counts


def scrape(service: Service) -> dict[str, str]:
    """Family name → type of the service's /metrics."""
    text = httpx.get(f"{service.base_url}/metrics", timeout=10).text
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def request_count(service: Service) -> float:
    text = httpx.get(f"{service.base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == f"{REQUEST_METRIC}_count"
    )


def test_metrics_aggregate_every_worker(service: Service) -> None:
    assert not (service.metrics_dir / "counter_1.db").exists(), (
        "the master did not wipe the metrics directory"
    )
    served = pids(service.metrics_dir, "histogram")
    assert len(served) >= WORKERS
    assert len(pids(service.metrics_dir, "gauge_livemax")) >= WORKERS
    # Whichever worker answers the scrape, it reports every worker's requests.
    for _ in range(4):
        assert request_count(service) >= service.sent
    text = httpx.get(f"{service.base_url}/metrics", timeout=10).text
    # The loaded-variant gauge is one series per variant, not one per worker.
    info = [line for line in text.splitlines() if line.startswith("faceverify_model_info{")]
    assert info and len(info) == len(set(info))
    assert 'default="true"' in "".join(info)


def test_promtool_checks_the_shipped_config() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs the Debian package prometheus"
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_prometheus_scrapes_the_service(service: Service, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs the Debian package prometheus"
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    # The shipped config, pointed at the test's port (the compose file's api:8000 does not resolve here).
    config["global"]["scrape_interval"] = "1s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{service.port}"]}]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, "prometheus", process, log, 60
        )

        def counted() -> bool:
            query = f"sum({REQUEST_METRIC}_count)"
            body = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()
            assert body["status"] == "success", body
            result = body["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= service.sent

        wait_until(counted, "a scrape with every worker's requests", process, log, 60)
        # The count Prometheus holds is the sum of the workers' own counts, each of them non-zero.
        per_worker = requests_per_worker(service.metrics_dir, tmp_path / "workers")
        assert len([n for n in per_worker.values() if n > 0]) >= WORKERS, per_worker
        body = httpx.get(f"{url}/api/v1/query", params={"query": f"sum({REQUEST_METRIC}_count)"}, timeout=5)
        assert float(body.json()["data"]["result"][0]["value"][1]) == sum(per_worker.values())
        # The dashboard's latency expression over the real histogram answers with a number.
        quantile = f"histogram_quantile(0.95, sum by (endpoint, le) ({REQUEST_METRIC}_bucket))"
        body = httpx.get(f"{url}/api/v1/query", params={"query": quantile}, timeout=5).json()
        endpoints = {r["metric"]["endpoint"]: float(r["value"][1]) for r in body["data"]["result"]}
        assert endpoints.get("/v1/verify", 0) > 0, body
        # Every dashboard query is valid PromQL that this Prometheus evaluates (Grafana's own variables
        # replaced by what Grafana would put there).
        for expr in dashboard_exprs():
            query = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            answer = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()
            assert answer["status"] == "success", (expr, answer)
            if "faceverify_model_info" in expr:
                assert answer["data"]["result"], "no loaded variant in Prometheus"
        targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
    finally:
        stop(process)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    return exprs


def dashboard_metrics() -> set[str]:
    return {name for expr in dashboard_exprs() for name in re.findall(r"\bfaceverify_[a-z0-9_]+", expr)}


def test_every_dashboard_metric_is_exported(service: Service) -> None:
    families = scrape(service)
    for name in sorted(dashboard_metrics()):
        # Sample names → family names: histograms export _bucket/_count/_sum, counters _total.
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if base != name:
            assert families.get(base) == "histogram", f"{name}: no histogram {base} in /metrics"
            continue
        base = re.sub(r"_total$", "", name)
        if base != name:
            assert families.get(base) == "counter", f"{name}: no counter {base} in /metrics"
            continue
        assert name in families, f"{name} is not in /metrics"


def test_dashboard_covers_the_issue_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "faceverify-service"  # stable: links and provisioning refer to it
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (endpoint, le)" in exprs
        assert f"histogram_quantile({quantile}, sum by (variant, le)" in exprs
    for needle in ("by (stage)", "faceverify_decisions_total", "by (code)", "faceverify_model_info"):
        assert needle in exprs
    datasource_uid = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {datasource_uid}


def test_grafana_provisioning_files() -> None:
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service name and Prometheus' port
    dashboards = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    assert dashboards["apiVersion"] == 1
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    # The provider's path is where compose mounts the repo's dashboards folder.
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file() -> None:
    spec = compose()
    services = spec["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {
        "api",
        "prometheus",
        "grafana",
    }  # `docker compose up` (profiles: tests/test_compose_postgres.py)
    assert "healthcheck" in services["api"]
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "gallery:/data" in services["api"]["volumes"]
    named = set(spec["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in named, f"{name} mounts the undeclared volume {source}"
    # The scrape target is the api service's name and port.
    (job,) = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]


def test_dockerfile_runs_the_multi_worker_server() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch" not in dockerfile.replace("No torch", "")
    assert re.search(r"^USER (?!root)", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'CMD ["gunicorn", "-c", "python:service.gunicorn_conf", "service.main:create_app()"]' in dockerfile
    assert "PROMETHEUS_MULTIPROC_DIR=" in dockerfile


def gunicorn_settings(**env: str) -> dict[str, Any]:
    """What service.gunicorn_conf puts into the workers' environment (a subprocess: it sets os.environ)."""
    probe = (
        "import json, os, service.gunicorn_conf as c; from service.config import Settings; "
        "print(json.dumps({'threads': os.environ['FACEVERIFY_INTRA_OP_THREADS'], 'workers': c.workers, "
        "'bind': c.bind, 'cores': c.usable_cores(), 'metrics': os.environ['PROMETHEUS_MULTIPROC_DIR'], "
        "'image_pool': Settings().image_pool_size(c.usable_cores())}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FACEVERIFY_", "PROMETHEUS_"))}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        timeout=30,
        check=True,
    )
    settings = json.loads(result.stdout)
    made = Path(settings["metrics"])
    settings["metrics_is_dir"] = made.is_dir()
    shutil.rmtree(made, ignore_errors=True)
    return settings


def test_threads_per_worker_follow_the_worker_count() -> None:
    one = gunicorn_settings(FACEVERIFY_WORKERS="1")
    cores = int(one["cores"])
    assert one["threads"] == str(cores)
    many = gunicorn_settings(FACEVERIFY_WORKERS=str(cores * 2), FACEVERIFY_PORT="9123")
    assert many["threads"] == "1" and many["bind"] == "127.0.0.1:9123"
    assert int(gunicorn_settings()["workers"]) == cores  # default: one worker per usable core
    explicit = gunicorn_settings(FACEVERIFY_WORKERS="2", FACEVERIFY_INTRA_OP_THREADS="3")
    assert explicit["threads"] == "3"  # set explicitly: kept
    # A worker per core still runs a request's photos side by side (all cores' worth of images per worker):
    # splitting the cores between the workers as well serialised every verify's two photos.
    per_core = gunicorn_settings(FACEVERIFY_WORKERS=str(cores))
    assert per_core["threads"] == "1" and per_core["image_pool"] == cores
    assert gunicorn_settings(FACEVERIFY_WORKERS=str(cores), FACEVERIFY_IMAGE_WORKERS="1")["image_pool"] == 1
    assert explicit["metrics_is_dir"]  # no directory given: a fresh temporary one
