"""Typed errors of the face pipeline: what a photo or a variant request can do wrong.

Each carries a stable machine-readable ``code``; the service maps codes to HTTP statuses in one place
(``service/api/errors.py``). Messages are written for clients: they never contain exception text
from libraries, file paths or biometric data.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every error a client may legitimately cause (and of ``NotReady``, which it may meet)."""

    code: str = "domain_error"

    def __init__(self, message: str, *, field: str | None = None, **extensions: object) -> None:
        super().__init__(message)
        self.message = message
        # Which request part was at fault (e.g. "image_b"), so a client can tell its two photos apart.
        self.field = field
        # Extra members of the problem document (e.g. the valid variant names); must be client-safe.
        self.extensions = extensions


class InvalidImage(DomainError):
    """Empty, truncated or undecodable image bytes."""

    code = "invalid_image"


class UnsupportedFormat(DomainError):
    """A well-formed file that is not JPEG, PNG or WebP."""

    code = "unsupported_format"


class ImageTooLarge(DomainError):
    """Too many pixels (checked from the header, before decoding) or too many bytes."""

    code = "image_too_large"


class NoFaceDetected(DomainError):
    code = "no_face_detected"


class FaceTooSmall(DomainError):
    code = "face_too_small"


class MultipleFaces(DomainError):
    code = "multiple_faces"


class UnknownVariant(DomainError):
    code = "unknown_variant"


class NotReady(DomainError):
    """Not the client's fault: no model can serve the request (e.g. the default variant is not published)."""

    code = "not_ready"
