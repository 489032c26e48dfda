"""Request-scoped dependencies: everything a route needs, reached through ``app.state`` (never globals).

They are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency in its thread pool, and
a verify resolves nine of them, so each request paid nine thread hand-offs (profiled with py-spy: a third of
the event loop's time under load) for what are attribute lookups. Nothing here may block.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from faces.embed import Embedder
from faces.pipeline import FacePipeline
from faces.variants import VariantRegistry
from service.api.admission import ImageAdmission
from service.config import Settings
from service.errors import InvalidRequest, NotReady, Unauthorized
from service.gallery import Gallery
from service.metrics import Metrics
from service.resources import Resources


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_resources(request: Request) -> Resources:
    resources = getattr(request.app.state, "resources", None)
    if resources is None:
        raise NotReady("The service is starting or stopping.")
    return resources


async def get_admission(request: Request) -> ImageAdmission:
    admission = getattr(request.app.state, "admission", None)
    if admission is None:
        raise NotReady("The service is starting or stopping.")
    return admission


SettingsDep = Annotated[Settings, Depends(get_settings)]
AdmissionDep = Annotated[ImageAdmission, Depends(get_admission)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_gallery(resources: ResourcesDep) -> Gallery:
    return resources.gallery


async def get_variants(resources: ResourcesDep) -> VariantRegistry:
    return resources.variants


async def get_pipeline(resources: ResourcesDep) -> FacePipeline:
    return resources.pipeline


GalleryDep = Annotated[Gallery, Depends(get_gallery)]
VariantsDep = Annotated[VariantRegistry, Depends(get_variants)]
PipelineDep = Annotated[FacePipeline, Depends(get_pipeline)]


async def select_embedder(
    request: Request,
    variants: VariantsDep,
    x_model_variant: Annotated[
        str | None,
        Header(
            description="Embedding variant: NAME (latest version), NAME@VERSION or an alias. "
            "Absent: the store's default. See GET /v1/models.",
            examples=["squeezefacenet@1"],
        ),
    ] = None,
) -> Embedder:
    embedder = variants.select(x_model_variant)
    request.state.variant = embedder.ref  # for the request-duration metric and the access log
    return embedder


EmbedderDep = Annotated[Embedder, Depends(select_embedder)]


async def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="Required when the service has an API key")] = None,
) -> None:
    expected = settings.api_key
    if expected is None or not expected.get_secret_value():  # FACEVERIFY_API_KEY unset or empty: open
        return
    # compare_digest on bytes: constant time whatever the content (it refuses non-ASCII str).
    given = (x_api_key or "").encode()
    if not secrets.compare_digest(given, expected.get_secret_value().encode()):
        raise Unauthorized("A valid X-API-Key header is required.")


def sent_once(*names: str):  # type: ignore[no-untyped-def]
    """A route dependency refusing a form that repeats any of ``names`` (422 invalid_request).

    FastAPI would silently keep the last value of a repeated single-valued field; a client that sends two
    ``image_a`` parts has a bug we should show it, not guess around. The form is parsed once per request
    (Starlette caches it), so this costs a lookup.
    """

    async def check(request: Request) -> None:
        form = await request.form()
        for name in names:
            if len(form.getlist(name)) > 1:
                raise InvalidRequest(f"The field {name} was sent more than once.", field=name)

    return Depends(check)
