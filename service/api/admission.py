"""How much image work one process does at once: a small pool, and large images one at a time.

Memory of a request is dominated by decoded pixels (about 8.5 bytes a pixel at the peak of a decode), so it is
bounded by how many images are decoded at once, not by how many requests wait. Waiting costs nothing but
the uploaded bytes, which the body cap already bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class ImageAdmission:
    """At most ``pool_size`` images in the pipeline at once, and only one of them over ``large_pixels``.

    Built in the app's lifespan (one per process). Waiting for a turn is cancellable (a request whose client
    has gone gives its place up); a running image finishes in its thread, holding its place until then.
    """

    def __init__(self, pool_size: int, large_pixels: int) -> None:
        self.pool_size = pool_size
        self.large_pixels = large_pixels
        self._pool = anyio.CapacityLimiter(pool_size)
        self._large = anyio.Lock()

    async def run(self, pixels: int, func: Callable[..., T], *args: object) -> T:
        large = pixels > self.large_pixels
        gate: AbstractAsyncContextManager[object] = self._large if large else nullcontext()
        async with gate:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._pool)

    @property
    def busy(self) -> int:
        return int(self._pool.borrowed_tokens)
