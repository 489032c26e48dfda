"""Plain ASGI middleware: the body-size cap, load shedding, abandoning work of departed clients, no-store
on /v1 answers, request timing and the access log."""

from __future__ import annotations

import logging
import time

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import problem_response
from service.errors import Overloaded
from service.metrics import NO_VARIANT, Metrics

access_log = logging.getLogger("service.access")

# Paths that are never shed: the platform's probes and the scrape must answer however busy the worker is.
UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# scope["state"] key set when a request's client went away before its answer; logged with nginx's 499.
ABANDONED = "abandoned"
CLIENT_CLOSED = 499


class RequestMetricsMiddleware:
    """Times /v1 requests into ``faceverify_request_duration_seconds`` and writes one access-log line.

    Both use the route *template* (``/v1/users/{user_id}``), never the raw path: paths carry user ids, and
    uvicorn's own access log is switched off by ``faceverify serve`` for the same reason.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, prefix: str = "/v1") -> None:
        self.app = app
        self.metrics = metrics
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app dies before starting a response

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if scope.get("state", {}).get(ABANDONED):
                status = CLIENT_CLOSED
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", None)
            variant = scope.get("state", {}).get("variant", NO_VARIANT)
            # Unmatched paths are not labelled: any string a client invents would become a time series.
            if endpoint is not None and endpoint.startswith(self.prefix):
                self.metrics.request_duration.labels(endpoint=endpoint, variant=variant).observe(elapsed)
            access_log.info(
                "%s %s %d %.1fms variant=%s",
                scope.get("method", "-"),
                endpoint or "<unmatched>",
                status,
                elapsed * 1000,
                variant,
            )


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 image_too_large.

    A declared Content-Length over the cap is refused before anything is read. Otherwise the bytes are
    counted as they arrive, so a chunked upload (no Content-Length) or a lying header is cut off at the cap
    instead of being spooled whole. Starlette's own limiter is not used because it replaces every 413 body
    with plain text, and clients rely on the problem document's ``code``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            self.metrics.errors.labels(code="image_too_large").inc()
            response = problem_response("image_too_large", "The request body is too large.")
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions met while reading the body; the app's handler turns
                    # this one into the image_too_large problem document.
                    raise HTTPException(status_code=413)
            return message

        await self.app(scope, limited_receive, send)


class LoadShedMiddleware:
    """At most ``max_in_flight`` requests at once in this process; the next gets 503 ``overloaded``.

    Refusing at once, before the body is read, keeps the latency of the admitted requests bounded
    (a queue of unbounded length only turns overload into timeouts for everyone) and tells the client
    when to come back (``Retry-After``). uvicorn's ``limit_concurrency`` is not used: it answers a
    plain-text 503 without Retry-After and counts connections, not requests.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_in_flight: int, retry_after: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNSHED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.metrics.errors.labels(code="overloaded").inc()
            response = problem_response(
                "overloaded",
                Overloaded.DETAIL,
                headers={"Retry-After": str(self.retry_after)},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.in_flight.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1
                self.metrics.in_flight.dec()

        async def send_then_release(message: Message) -> None:
            await send(message)
            # Released with the answer's last byte, not when the app's stack has unwound: a client that
            # sends its next request the moment it has the answer must find its place free.
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                release()

        try:
            await self.app(scope, receive, send_then_release)
        finally:
            release()


class AbandonOnDisconnectMiddleware:
    """Cancels a request's work when its client disconnects before the answer.

    Once the app has read the whole body, this middleware takes over the ASGI ``receive`` channel and
    waits on it for ``http.disconnect``; if that comes first, the app is cancelled. Images still waiting
    for the pipeline pool never start; an image already in a thread finishes (a thread cannot be
    stopped), and no answer is sent. Until the body is complete, a disconnect reaches the app as usual.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = anyio.Event()
        disconnected = anyio.Event()
        response_started = False

        async def app_receive() -> Message:
            if body_complete.is_set():  # the watcher owns the channel now
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_complete.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await body_complete.wait()
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    if not response_started:
                        scope.setdefault("state", {})[ABANDONED] = True
                        self.metrics.errors.labels(code="client_closed").inc()
                        group.cancel_scope.cancel()

            group.start_soon(watch)
            await self.app(scope, app_receive, app_send)
            group.cancel_scope.cancel()  # answered: stop watching


class NoStoreMiddleware:
    """``Cache-Control: no-store`` on every answer under ``prefix``: they carry biometric decisions and
    user ids, which no shared or browser cache should keep."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_no_store)
