"""POST /v1/enroll: store a person's face templates, one per image for every served variant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import GalleryDep, MetricsDep, PipelineDep, SettingsDep, VariantsDep
from service.api.errors import IMAGE_ERRORS, problem_responses
from service.api.routes import API_PREFIX
from service.api.routes._common import embed_uploads
from service.errors import InvalidRequest, NotReady
from service.gallery import Template
from service.inference.variants import gallery_key
from service.metrics import ALL_VARIANTS
from service.schemas import USER_ID_DESCRIPTION, USER_ID_PATTERN, EnrollResponse, FaceSummary

router = APIRouter(prefix=API_PREFIX, tags=["gallery"])


@router.post(
    "/enroll",
    summary="Enrol a user from one or more single-face photos",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    responses=problem_responses(*IMAGE_ERRORS, "multiple_faces"),
)
async def enroll(
    request: Request,
    user_id: Annotated[str, Form(pattern=USER_ID_PATTERN, description=USER_ID_DESCRIPTION)],
    images: Annotated[list[UploadFile], File(description="One or more photos, each showing one face")],
    variants: VariantsDep,
    pipeline: PipelineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> EnrollResponse:
    if len(images) > settings.max_enroll_images:
        raise InvalidRequest(f"At most {settings.max_enroll_images} images per enrolment.", field="images")
    request.state.variant = ALL_VARIANTS  # request-duration label: enrolment runs every variant
    embedders = list(variants.embedders.values())
    if not embedders:
        raise NotReady("No embedding model is loaded.")
    # Every variant gets a template from every image, so switching variants later never means comparing
    # templates made by different models. All images are checked before anything is stored: all or nothing.
    results = await embed_uploads(
        pipeline,
        [(f"images[{index}]", upload) for index, upload in enumerate(images)],
        embedders,
        metrics,
        label=ALL_VARIANTS,
        single_face=True,
    )
    templates = [
        Template(key=gallery_key(e), model_ref=e.ref, embedding=r.embeddings[e.ref])
        for r in results
        for e in embedders
    ]
    await run_in_threadpool(gallery.add_templates, user_id, templates)
    counts = await run_in_threadpool(gallery.count_templates, user_id)
    return EnrollResponse(
        user_id=user_id,
        images=len(results),
        templates_added={e.ref: len(results) for e in embedders},
        total_templates=sum(c.count for c in counts),
        faces=[FaceSummary.of(r.face, r.face_count) for r in results],
    )
