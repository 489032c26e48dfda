"""The compose file's ``postgres`` profile (no Docker engine here: checked for structure and consistency)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def expand(value: str) -> str:
    """Compose's ``${VAR:-default}`` with the variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_postgres_profile() -> None:
    spec = compose()
    services = spec["services"]
    profiled = {name for name, service in services.items() if "postgres" in service.get("profiles", [])}
    assert profiled == {"postgres", "api-pg"}
    db, api = services["postgres"], services["api-pg"]
    assert db["image"].startswith("pgvector/pgvector:") and db["image"].endswith("-pg16")  # tests run 16
    assert "pg_isready" in db["healthcheck"]["test"]
    (mount,) = db["volumes"]
    volume, target = mount.split(":")
    assert volume in spec["volumes"] and target == "/var/lib/postgresql/data"  # named volume, durable
    assert "ports" not in db  # reachable from the replicas only
    assert api["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "readyz" in " ".join(api["healthcheck"]["test"])  # readiness includes the database
    # replicas share nothing local: no gallery volume, and each gets its own loopback port
    assert "volumes" not in api
    (ports,) = api["ports"]
    assert re.fullmatch(r"127\.0\.0\.1:8001-800\d:8000", ports)
    assert api["image"] == services["api"]["image"]


def test_api_pg_settings_point_at_the_database() -> None:
    spec = compose()
    db, api = spec["services"]["postgres"], spec["services"]["api-pg"]
    env = {k: expand(str(v)) for k, v in api["environment"].items()}
    settings = Settings(**{k.removeprefix("FACEVERIFY_").lower(): v for k, v in env.items()})
    url = urlsplit(settings.gallery_url)
    db_env = {k: expand(str(v)) for k, v in db["environment"].items()}
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
    assert url.username == db_env["POSTGRES_USER"] and url.password == db_env["POSTGRES_PASSWORD"]
    assert url.path == "/" + db_env["POSTGRES_DB"]
    assert "${POSTGRES_PASSWORD" in api["environment"]["FACEVERIFY_GALLERY_URL"]  # not a fixed secret


def test_postgres_keeps_a_large_index_in_its_buffers() -> None:
    """The image's 128 MB of shared_buffers would read a 1M-template HNSW index (~1.3 GB) from the OS on every
    search; the parallel index build needs more than Docker's 64 MB of /dev/shm."""
    db = compose()["services"]["postgres"]
    command = [expand(str(part)) for part in db["command"]]
    assert command[0] == "postgres"
    options = dict(value.split("=", 1) for value in command[2::2])
    assert set(command[1::2]) == {"-c"}
    assert options["shared_buffers"].endswith("GB") and int(options["shared_buffers"][:-2]) >= 1
    assert "maintenance_work_mem" in options
    assert db["shm_size"].lower().endswith("g")
