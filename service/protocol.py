"""uvicorn's httptools protocol with limits on request headers: their size, their count and their time.

uvicorn has none of these for httptools (its ``h11_max_incomplete_event_size`` applies to h11 only and
answers a plain 400), and its keep-alive timer only runs *between* requests, so a connection that trickles
a header, or never sends one, is held for ever. Under gunicorn the same holds: ``limit_request_field_size``,
``limit_request_fields`` and ``limit_request_line`` belong to gunicorn's own HTTP parser, which uvicorn
workers do not use. Both servers get this class (``service/server.py``).

- More than ``max_header_bytes`` of request line and headers, or more than ``max_header_count`` header
  fields: 431 ``headers_too_large`` (problem+json) and the connection is closed. The bytes are counted
  as they arrive, so a 64 MB header is refused after its first ``max_header_bytes``, not buffered whole.
- Headers not complete ``header_timeout`` seconds after the connection opened, or after the first byte of
  a kept-alive connection's next request: 408 ``request_timeout`` (nothing if no byte came) and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.api.errors import problem_bytes

log = logging.getLogger(__name__)

_TOO_LARGE = "The request headers are too large or too many."


class _HeadersRejected(Exception):
    """Raised from a parser callback to stop parsing the current request."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Set on a subclass by ``guarded_protocol``; uvicorn builds protocols with a fixed signature.
    max_header_bytes = 16 * 1024
    max_header_count = 100
    header_timeout = 10.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_headers = True  # between a request's first byte (or the connection's start) and its headers
        self._header_bytes = 0
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None

    # --- connection ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own data_received, with our refusals: it would answer any callback error with a
        # plain-text 400.
        self._unset_keepalive_if_required()
        if self._in_headers:
            self._header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadersRejected):
                self._reject("headers_too_large", _TOO_LARGE)
            else:
                self._reject("malformed_body", "The request could not be parsed as HTTP/1.1.")
            return
        except httptools.HttpParserError:
            self._reject("malformed_body", "The request could not be parsed as HTTP/1.1.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Still inside the headers after this chunk: the parser buffers them, so stop it growing here.
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._reject("headers_too_large", _TOO_LARGE)

    # --- parser callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection: its own budget and clock
            self._in_headers = True
            self._header_bytes = 0
            self._start_header_timer()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            raise _HeadersRejected
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:  # all of it arrived in one chunk
            raise _HeadersRejected
        self._in_headers = False
        self._header_bytes = 0
        self._cancel_header_timer()
        super().on_headers_complete()

    # --- helpers -----------------------------------------------------------------------------------------
    def _start_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A request is still being answered; close after it instead of cutting it off.
            self.cycle.keep_alive = False
            return
        if self._header_bytes:
            self._reject("request_timeout", "The request headers did not arrive in time.")
        else:
            self.transport.close()

    def _reject(self, code: str, detail: str) -> None:
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        log.info("refused a connection's request: %s", code)
        self.transport.write(problem_bytes(code, detail))
        self.transport.close()


def guarded_protocol(
    max_header_bytes: int, max_header_count: int, header_timeout: float
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these limits, for uvicorn's ``http=`` option."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "max_header_count": max_header_count,
            "header_timeout": header_timeout,
        },
    )
