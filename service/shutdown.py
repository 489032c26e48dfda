"""Draining on SIGTERM: readiness goes 503 at once, the server's own shutdown follows after a delay.

uvicorn (alone or as gunicorn's worker) installs its SIGTERM/SIGINT handlers before the app's lifespan starts;
``Drain.install`` wraps them, so the app learns that a shutdown began while it still answers requests. Without
a server handler (tests driving the app in-process) nothing is installed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self.draining = False
        self._scheduled = False
        self._previous: dict[int, Handler] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is not threading.main_thread():  # e.g. TestClient's portal thread
            return
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._handler(loop, previous))

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handler(self, loop: asyncio.AbstractEventLoop, previous: Handler) -> Handler:
        def handle(sig: int, frame: FrameType | None) -> None:
            if not self.draining:
                log.info("signal %d: draining (readiness 503) for %.1f s", sig, self.delay_seconds)
            self.draining = True
            if self.delay_seconds > 0 and sig == signal.SIGTERM:
                if not self._scheduled:  # a repeated SIGTERM must not turn into uvicorn's forced exit
                    self._scheduled = True
                    # Signal handlers run between bytecodes of the loop's thread; schedule, do not act here.
                    loop.call_soon_threadsafe(loop.call_later, self.delay_seconds, previous, sig, frame)
            else:
                previous(sig, frame)

        return handle
