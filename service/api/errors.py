"""The one place where errors become HTTP: status per code, RFC 9457 problem documents, exception handlers.

A body is built from the error's code and its client-safe message only: never exception text from a
library, a path, or request content.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from service.errors import DomainError
from service.schemas import Problem

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

# code → (HTTP status, title)
STATUS: dict[str, tuple[int, str]] = {
    "invalid_image": (400, "Invalid image"),
    "unknown_variant": (400, "Unknown model variant"),
    "unauthorized": (401, "Unauthorized"),
    "user_not_found": (404, "User not found"),
    "too_many_templates": (409, "Too many templates"),
    "image_too_large": (413, "Image too large"),
    "unsupported_format": (415, "Unsupported image format"),
    "no_face_detected": (422, "No face detected"),
    "face_too_small": (422, "Face too small"),
    "multiple_faces": (422, "Multiple faces"),
    "invalid_request": (422, "Invalid request"),
    "not_ready": (503, "Not ready"),
    # Not domain errors, but answered in the same shape.
    "malformed_body": (400, "Malformed request body"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "request_timeout": (408, "Request timeout"),
    "headers_too_large": (431, "Request header fields too large"),
    "overloaded": (503, "Overloaded"),
    "internal_error": (500, "Internal error"),
}

_PROBLEM_SCHEMA = Problem.model_json_schema()

# Framework HTTP errors (unknown route, wrong method, body over the cap) → our codes.
_HTTP_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed", 413: "image_too_large"}
_HTTP_DETAILS = {
    400: "The request body could not be parsed (expected multipart/form-data with a boundary).",
    404: "No such resource.",
    405: "This method is not allowed here.",
    413: "The request body is too large.",
}


def problem_body(
    code: str, detail: str, *, field: str | None = None, extensions: dict[str, Any] | None = None
) -> dict[str, Any]:
    status, title = STATUS[code]
    body = Problem(
        type=f"urn:faceverify:error:{code}", title=title, status=status, code=code, detail=detail, field=field
    ).model_dump(exclude_none=True)
    body.update(extensions or {})
    return body


def problem_response(
    code: str,
    detail: str,
    *,
    field: str | None = None,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(code, detail, field=field, extensions=extensions)
    return JSONResponse(body, status_code=STATUS[code][0], media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_bytes(code: str, detail: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response carrying a problem document, closing the connection.

    For refusals made by the HTTP protocol layer (``service/protocol.py``), before there is an ASGI
    request to answer through the app.
    """
    status, title = STATUS[code]
    payload = json.dumps(problem_body(code, detail), separators=(",", ":")).encode()
    lines = [
        f"HTTP/1.1 {status} {title}",
        f"content-type: {PROBLEM_MEDIA_TYPE}",
        f"content-length: {len(payload)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _count(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=code).inc()


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    code = exc.code if exc.code in STATUS else "invalid_request"
    _count(request, code)
    headers = None
    if code == "unauthorized":
        headers = {"WWW-Authenticate": 'APIKey header="X-API-Key"'}
    elif code == "overloaded":
        headers = {"Retry-After": str(request.app.state.settings.retry_after_seconds)}
    return problem_response(code, exc.message, field=exc.field, extensions=exc.extensions, headers=headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    _count(request, "invalid_request")
    # Location and message only: pydantic's "input" member would echo request content back.
    errors = [{"loc": [str(part) for part in e.get("loc", ())], "msg": _message(e)} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(first['loc']) or 'request'}: {first['msg']}"
    return problem_response("invalid_request", detail, extensions={"errors": errors})


def _message(error: Any) -> str:
    # A custom validator's "Value error, ..." text is the framework's own (it names Python classes:
    # "Expected UploadFile, received: <class 'str'>"); pydantic's typed messages are client-safe.
    if error.get("type") == "value_error":
        return "expected a file upload" if "UploadFile" in str(error.get("msg")) else "invalid value"
    return str(error.get("msg", ""))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__ or exc.__context__  # Starlette raises it while handling the parser's exception
    if exc.status_code == 400 and isinstance(cause, MultiPartException) and str(cause).startswith("Too many"):
        # Every form-parsing failure arrives as one 400; too many parts is a count, not a broken body.
        _count(request, "invalid_request")
        parts = request.app.state.settings.max_form_parts
        return problem_response("invalid_request", f"The form has more than {parts} files or fields.")
    code = _HTTP_CODES.get(exc.status_code)
    if code is None:
        # A status we did not plan for: keep it, but still answer as a problem document without its text.
        _count(request, f"http_{exc.status_code}")
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "HTTP error",
                "status": exc.status_code,
                "code": "http_error",
                "detail": "The request could not be processed.",
            },
            status_code=exc.status_code,
            media_type=PROBLEM_MEDIA_TYPE,
        )
    _count(request, code)
    return problem_response(code, _HTTP_DETAILS[exc.status_code])


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # A bug on our side: the traceback goes to the server log, the client gets nothing of it.
    log.exception("unhandled error on %s %s", request.method, _route_template(request))
    _count(request, "internal_error")
    # Starlette re-raises after this answer and uvicorn then drops the connection: say so, rather than
    # leave the client to meet a reset on its next request.
    return problem_response(
        "internal_error", "The server failed to process the request.", headers={"Connection": "close"}
    )


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "<unmatched>")


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, unhandled_error_handler)


# What a route that takes photos can answer about them.
IMAGE_ERRORS = (
    "malformed_body",
    "invalid_image",
    "unsupported_format",
    "image_too_large",
    "no_face_detected",
    "face_too_small",
)

# Any /v1 route can meet these: a malformed parameter, the API key, a process that is not ready or full.
_EVERY_V1_ROUTE = ("invalid_request", "unauthorized", "not_ready", "overloaded")


def problem_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a /v1 route that can answer with these codes (grouped by status)."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys((*codes, *_EVERY_V1_ROUTE)):
        by_status.setdefault(STATUS[code][0], []).append(code)
    # The schema is inlined rather than given as ``model``: FastAPI would file a model under the route's
    # own media type (application/json), but these bodies are application/problem+json.
    return {
        status: {
            "description": "Problem: " + ", ".join(group),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for status, group in sorted(by_status.items())
    }
