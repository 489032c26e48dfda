"""How much image work one process does at once: a small pool, and large images one at a time.

Memory of a request is dominated by decoded pixels (about 8.5 bytes a pixel at the peak of a decode), so it is
bounded by how many images are decoded at once, not by how many requests wait. Waiting costs nothing but
the uploaded bytes, which the body cap already bounds.

Waiting does cost time, though: under overload an admitted request's latency is its wait for the pool plus
its own work. So a request none of whose images has started within ``queue_timeout`` seconds of its upload
being read is refused with 503 ``overloaded`` (:class:`Overloaded`) instead of being answered late (once one
has started, the request is being served: its other images wait for their turn, e.g. behind it): the bound on
requests in flight (``LoadShedMiddleware``) caps memory, this deadline caps the latency of what is accepted,
whatever the machine's speed (a CoDel-like queue timeout rather than a count tuned to one machine).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from service.errors import Overloaded

T = TypeVar("T")


class QueueTicket:
    """One request's place in the queue: its images must start before ``deadline`` until one of them has."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.started = False
        self._waiting: set[anyio.CancelScope] = set()

    def waiting_scope(self) -> anyio.CancelScope:
        scope = anyio.CancelScope(deadline=math.inf if self.started else self.deadline)
        self._waiting.add(scope)
        return scope

    def done_waiting(self, scope: anyio.CancelScope) -> None:
        self._waiting.discard(scope)

    def start(self) -> None:
        """One image has its place: the request's other images may wait as long as their turn takes."""
        self.started = True
        for scope in self._waiting:
            scope.deadline = math.inf


class ImageAdmission:
    """At most ``pool_size`` images in the pipeline at once, and only one of them over ``large_pixels``.

    Built in the app's lifespan (one per process). Waiting for a turn is cancellable (a request whose client
    has gone gives its place up); a running image finishes in its thread, holding its place until then.
    ``queue_timeout`` (seconds, None: wait as long as it takes) bounds how long a request waits for its
    first image to start.
    """

    def __init__(self, pool_size: int, large_pixels: int, queue_timeout: float | None = None) -> None:
        self.pool_size = pool_size
        self.large_pixels = large_pixels
        self.queue_timeout = queue_timeout
        self._pool = anyio.CapacityLimiter(pool_size)
        # The threads run under their own limiter: the pool's token is taken (with the deadline) before.
        self._threads = anyio.CapacityLimiter(pool_size)
        self._large = anyio.Lock()

    def ticket(self) -> QueueTicket:
        """The queue place of a request arriving now (deadline ``inf``: no queue timeout)."""
        timeout = self.queue_timeout
        return QueueTicket(anyio.current_time() + timeout if timeout is not None else math.inf)

    async def run(
        self, pixels: int, func: Callable[..., T], *args: object, ticket: QueueTicket | None = None
    ) -> T:
        large = pixels > self.large_pixels
        scope = ticket.waiting_scope() if ticket is not None else anyio.CancelScope()
        try:
            with scope:
                if large:
                    await self._large.acquire()
                try:
                    await self._pool.acquire()
                except BaseException:
                    if large:
                        self._large.release()
                    raise
        finally:
            if ticket is not None:
                ticket.done_waiting(scope)
        if scope.cancelled_caught:
            raise Overloaded()
        if ticket is not None:
            ticket.start()
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)
        finally:
            self._pool.release()
            if large:
                self._large.release()

    @property
    def busy(self) -> int:
        return int(self._pool.borrowed_tokens)
