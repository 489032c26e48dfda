"""Plain ASGI middleware: the body-size cap, request timing and the access log."""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import problem_response
from service.metrics import NO_VARIANT, Metrics

access_log = logging.getLogger("service.access")


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
