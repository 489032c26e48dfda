"""Application factory. Heavy resources (ONNX sessions, the gallery) are built once in ``lifespan``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from service.api import errors
from service.api.deps import require_api_key
from service.api.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from service.api.routes import API_PREFIX, demo, enroll, health, identify, models, users, verify
from service.config import Settings
from service.metrics import Metrics
from service.resources import build_resources

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
        app.state.resources = resources
        try:
            yield
        finally:
            app.state.resources = None
            resources.close()

    app = FastAPI(
        title="SqueezerFaceNet face verification",
        version="0.1.0",
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.resources = None
    errors.install(app)
    # Added last = outermost: the timing and the access log also see requests the body cap refused.
    app.add_middleware(BodyLimitMiddleware, metrics=metrics, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, prefix=API_PREFIX)

    for module in (verify, identify, enroll, users, models):
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    app.include_router(health.router)
    if settings.demo:
        demo.install(app)
    return app
