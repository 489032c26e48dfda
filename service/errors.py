"""Typed domain errors.

Each carries a stable machine-readable ``code``; the API maps codes to HTTP statuses in one place
(``service/api/errors.py``). Messages are written for clients: they never contain exception text
from libraries, file paths or biometric data.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every error a client may legitimately cause."""

    code: str = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


class UserNotFound(DomainError):
    code = "user_not_found"


class Unauthorized(DomainError):
    code = "unauthorized"
