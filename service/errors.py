"""Typed domain errors: the face pipeline's (``faces.errors``, re-exported) and the service's own.

Each carries a stable machine-readable ``code``; the API maps codes to HTTP statuses in one place
(``service/api/errors.py``). Messages are written for clients: they never contain exception text
from libraries, file paths or biometric data.
"""

from __future__ import annotations

from faces.errors import (
    DomainError,
    FaceTooSmall,
    ImageTooLarge,
    InvalidImage,
    MultipleFaces,
    NoFaceDetected,
    NotReady,
    UnknownVariant,
    UnsupportedFormat,
)

__all__ = [
    "DomainError",
    "FaceTooSmall",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidRequest",
    "MultipleFaces",
    "NoFaceDetected",
    "NotReady",
    "Overloaded",
    "TooManyTemplates",
    "Unauthorized",
    "UnknownVariant",
    "UnsupportedFormat",
    "UserNotFound",
]


class UserNotFound(DomainError):
    code = "user_not_found"


class Unauthorized(DomainError):
    code = "unauthorized"


class InvalidRequest(DomainError):
    """Malformed request: a missing or ill-formed field, too many files."""

    code = "invalid_request"


class TooManyTemplates(DomainError):
    """An enrolment would take a user past ``max_templates_per_user`` templates of a variant."""

    code = "too_many_templates"


class Overloaded(DomainError):
    """The process is at capacity: too many requests in flight, or a request's images could not start within
    the queue timeout (503 with Retry-After)."""

    code = "overloaded"
    DETAIL = "The server is at capacity; retry after the number of seconds in Retry-After."

    def __init__(self, message: str = DETAIL) -> None:
        super().__init__(message)
