"""gunicorn settings of the multi-worker service (``faceverify serve --workers N`` runs this)::

    gunicorn -c python:service.gunicorn_conf 'service.main:create_app()'


Everything comes from the environment, as in the single-process service:

- ``FACEVERIFY_HOST`` / ``FACEVERIFY_PORT``: where to listen (default 127.0.0.1:8000);
- ``FACEVERIFY_WORKERS``: worker processes (default: the usable cores);
- ``FACEVERIFY_INTRA_OP_THREADS``: ONNX Runtime threads per worker (default: cores // workers, at least 1, so
  the workers together do not oversubscribe the cores);
- ``FACEVERIFY_IMAGE_WORKERS``: images in the pipeline at once per worker (default: cores // threads, at
  least 1, as in one process: a verify's two photos then run side by side whenever the other workers are idle,
  and under saturation the kernel shares the cores; see the Settings field);
- the HTTP limits (header size, count and time, keep-alive) come from the service's Settings through
  ``service.server.GuardedUvicornWorker``;
- ``PROMETHEUS_MULTIPROC_DIR``: where the workers write their metric files (default: a new temporary
  directory, removed again when the master exits). It is emptied when the master starts, because files of an
  earlier run would be counted again.

This module is read by the gunicorn master before it forks, so what it puts into ``os.environ`` reaches every
worker. prometheus-client picks its value class once, at import, so it must not be imported here before the
environment is set (a forked worker would inherit the single-process one).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from service.config import usable_cores  # no prometheus-client behind it

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # not from service.metrics: that imports prometheus-client


def threads_per_worker(workers: int, cores: int) -> int:
    return max(1, cores // max(1, workers))


workers = int(os.environ.get("FACEVERIFY_WORKERS") or usable_cores())
os.environ.setdefault("FACEVERIFY_INTRA_OP_THREADS", str(threads_per_worker(workers, usable_cores())))
# FACEVERIFY_IMAGE_WORKERS is left to Settings (cores // threads per worker): dividing the cores between the
# workers as well made every verify process its two photos one after the other (p50 27.5 → 20.3 ms measured).
# A directory made here is this server's to remove (on_exit); one given in the environment is the caller's.
_OWN_METRICS_DIR: str | None = None
if not os.environ.get(MULTIPROC_ENV):
    _OWN_METRICS_DIR = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="faceverify-metrics-")

bind = f"{os.environ.get('FACEVERIFY_HOST', '127.0.0.1')}:{os.environ.get('FACEVERIFY_PORT', '8000')}"
worker_class = "service.server.GuardedUvicornWorker"
# A drain delay (readiness 503 while still serving) comes before the usual drain of in-flight requests.
graceful_timeout = 30 + math.ceil(float(os.environ.get("FACEVERIFY_DRAIN_DELAY_SECONDS") or 0))
# gunicorn's default, kept explicit: uvicorn's access logger writes through it, and raw paths carry user ids.
# The service writes its own access line (logger service.access) with the route template instead.
accesslog = None
errorlog = "-"
loglevel = "info"
# gunicorn ≥ 27 opens a control socket under $HOME; nothing uses it, and the image's user cannot write there.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Master start: empty the metrics directory (stale files of a previous run would be summed in)."""
    path = Path(os.environ[MULTIPROC_ENV])
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def post_fork(server: Any, worker: Any) -> None:
    """In each worker: the service's own loggers (service.access, …) at INFO, as ``faceverify serve`` does."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def when_ready(server: Any) -> None:
    server.log.info(
        "%d workers × %s ONNX Runtime threads; metrics of all workers in %s",
        workers,
        os.environ["FACEVERIFY_INTRA_OP_THREADS"],
        os.environ[MULTIPROC_ENV],
    )


def child_exit(server: Any, worker: Any) -> None:
    """A worker died or was replaced: drop its live gauges so they stop counting."""
    from prometheus_client import multiprocess  # imported late: the environment is set by now

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Master exit: remove the metrics directory if this server made it (a temporary one per start)."""
    if _OWN_METRICS_DIR is not None:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
