"""The uvicorn options of the service, the same in both ways of serving it.

``faceverify serve`` passes ``uvicorn_options(settings)`` to ``uvicorn.run``; under gunicorn,
``service.gunicorn_conf`` names ``GuardedUvicornWorker``, which applies the same options to the worker's
uvicorn config (gunicorn's own ``limit_request_*`` settings never reach a uvicorn worker, and its
``keepalive`` would silently become uvicorn's keep-alive timeout).
"""

from __future__ import annotations

import warnings
from typing import Any

from service.config import Settings
from service.protocol import guarded_protocol

with warnings.catch_warnings():
    # uvicorn.workers is deprecated in favour of the uvicorn-worker package, which is the same class.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "http": guarded_protocol(
            settings.max_header_bytes, settings.max_header_count, settings.header_timeout
        ),
        "timeout_keep_alive": settings.keep_alive_timeout,
    }


class GuardedUvicornWorker(UvicornWorker):
    """gunicorn's uvicorn worker with the service's protocol limits and keep-alive timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same environment the app's Settings are read from (gunicorn_conf has set its defaults).
        for name, value in uvicorn_options(Settings()).items():
            setattr(self.config, name, value)
