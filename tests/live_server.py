"""A real ``faceverify serve`` process on a free loopback port, for tests where the network matters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60)

    def stop(self) -> int:
        """SIGTERM (uvicorn drains and the lifespan closes the gallery), SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    settings: dict[str, str],
    log: Path,
    *,
    ready_within: float = 90.0,
    workers: int = 1,
    unset: tuple[str, ...] = (),
) -> Server:
    """Start the service with these ``FACEVERIFY_*`` settings and wait until ``/readyz`` answers 200.

    The rest of the environment is inherited, except ``unset`` and an API key unless given; ``workers`` > 1
    serves with gunicorn."""
    port = free_port()
    dropped = {"FACEVERIFY_API_KEY", *unset}
    env = {k: v for k, v in os.environ.items() if k not in dropped} | settings
    command = [sys.executable, "-m", "faceverify.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + ready_within
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        waited = f"server not ready within {ready_within:.0f} s:\n"
        assert time.monotonic() < deadline, waited + log.read_text()
        time.sleep(0.2)
