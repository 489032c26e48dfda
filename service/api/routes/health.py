"""Probes and the Prometheus endpoint (outside /v1: no API key, so the platform can always reach them)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import MetricsDep
from service.metrics import CONTENT_TYPE
from service.schemas import Health, Readiness

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Models are loaded, a default variant exists and the gallery answers",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; checks say why"}},
)
async def readyz(request: Request) -> JSONResponse:
    resources = getattr(request.app.state, "resources", None)
    if resources is None:
        body = Readiness(status="not_ready", checks={"models": "not loaded"})
        return JSONResponse(body.model_dump(), status_code=503)
    drain = getattr(request.app.state, "drain", None)
    if drain is not None and drain.draining:
        body = Readiness(status="not_ready", checks={"shutdown": "draining"})
        return JSONResponse(body.model_dump(), status_code=503)
    registry = resources.variants
    checks = {
        "detector": "ok",
        "embedders": "ok" if registry.embedders else "no embedding model is published",
        "default_variant": "ok" if registry.default_ref else "the default variant is not loaded",
    }
    try:
        await run_in_threadpool(resources.gallery.ping)
        checks["gallery"] = "ok"
    except Exception:
        log.exception("gallery readiness check failed")
        checks["gallery"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    body = Readiness(
        status="ready" if ready else "not_ready",
        checks=checks,
        detector=resources.detector_ref,
        default_variant=registry.default_ref,
        variants=list(registry.embedders),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


# HEAD too (load balancers and uptime checkers often probe with it); one operation each in the OpenAPI.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
