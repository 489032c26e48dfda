"""Application factory. Heavy resources (ONNX sessions, the gallery) are built once in ``lifespan``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from service.api import errors
from service.api.admission import ImageAdmission
from service.api.deps import require_api_key
from service.api.middleware import (
    AbandonOnDisconnectMiddleware,
    BodyLimitMiddleware,
    LoadShedMiddleware,
    NoStoreMiddleware,
    RequestMetricsMiddleware,
)
from service.api.routes import API_PREFIX, demo, enroll, health, identify, models, users, verify
from service.config import Settings, usable_cores
from service.metrics import Metrics
from service.resources import build_resources
from service.shutdown import Drain

_DESCRIPTION = """\
Face verification and identification with pruned SqueezeNet face embedders.

Every photo goes through decode → MTCNN detection → 5-point alignment → embedding. Pick the embedding
variant per request with `X-Model-Variant` (see `GET /v1/models`); errors are RFC 9457 problem documents
(`application/problem+json`) with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()  # per app: tests and benchmarks build many apps in one process

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Building ONNX sessions takes a moment of CPU; keep the loop free meanwhile.
        resources = await run_in_threadpool(build_resources, settings)
        metrics.set_models(resources.variants.embedders.values(), resources.variants.default_ref)
        app.state.admission = ImageAdmission(
            settings.image_pool_size(usable_cores()),
            settings.large_image_pixels,
            queue_timeout=settings.queue_timeout_seconds,
        )
        drain = Drain(settings.drain_delay_seconds)
        drain.install(asyncio.get_running_loop())
        app.state.drain = drain
        app.state.resources = resources
        try:
            yield
        finally:
            drain.uninstall()
            app.state.resources = None
            resources.close()

    app = FastAPI(
        title="SqueezerFaceNet face verification",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
        form_limits={"max_files": settings.max_form_parts, "max_fields": settings.max_form_parts},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.resources = None
    errors.install(app)
    # Added last = outermost: the timing and the access log also see requests that were shed or that the
    # body cap refused; shedding comes before anything reads the body.
    app.add_middleware(BodyLimitMiddleware, metrics=metrics, max_bytes=settings.max_body_bytes)
    app.add_middleware(AbandonOnDisconnectMiddleware, metrics=metrics)
    app.add_middleware(
        LoadShedMiddleware,
        metrics=metrics,
        max_in_flight=settings.max_in_flight,
        retry_after=settings.retry_after_seconds,
    )
    app.add_middleware(NoStoreMiddleware, prefix=API_PREFIX)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, prefix=API_PREFIX)

    for module in (verify, identify, enroll, users, models):
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    app.include_router(health.router)
    if settings.demo:
        demo.install(app)
    return app
