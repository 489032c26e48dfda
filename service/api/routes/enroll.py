"""POST /v1/enroll: store a person's face templates, one per image for every served variant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile, status
from starlette.concurrency import run_in_threadpool

from service.api.deps import (
    AdmissionDep,
    GalleryDep,
    MetricsDep,
    PipelineDep,
    SettingsDep,
    VariantsDep,
    sent_once,
)
from service.api.errors import IMAGE_ERRORS, problem_responses
from service.api.routes import API_PREFIX
from service.api.routes._common import embed_uploads
from service.errors import InvalidRequest, NotReady, TooManyTemplates
from service.gallery import Template, gallery_key
from service.metrics import ALL_VARIANTS
from service.schemas import USER_ID_DESCRIPTION, USER_ID_PATTERN, EnrollResponse, FaceSummary

router = APIRouter(prefix=API_PREFIX, tags=["gallery"])


@router.post(
    "/enroll",
    summary="Enrol a user from one or more single-face photos",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    dependencies=[sent_once("user_id")],
    responses=problem_responses(*IMAGE_ERRORS, "multiple_faces", "too_many_templates"),
)
async def enroll(
    request: Request,
    user_id: Annotated[str, Form(pattern=USER_ID_PATTERN, description=USER_ID_DESCRIPTION)],
    images: Annotated[list[UploadFile], File(description="One or more photos, each showing one face")],
    variants: VariantsDep,
    pipeline: PipelineDep,
    admission: AdmissionDep,
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
    # Checked before any image is processed. Two enrolments of one user running at the same moment can
    # both pass it, so the cap can be overshot by one request's images, never grow without bound.
    held = max((c.count for c in await run_in_threadpool(gallery.count_templates, user_id)), default=0)
    if held + len(images) > settings.max_templates_per_user:
        raise TooManyTemplates(
            f"A user may hold at most {settings.max_templates_per_user} templates per variant; this one "
            f"holds {held}. Delete the user to enrol again from scratch.",
            field="images",
        )
    # Every variant gets a template from every image, so switching variants later never means comparing
    # templates made by different models. All images are checked before anything is stored: all or nothing.
    results = await embed_uploads(
        pipeline,
        admission,
        [(f"images[{index}]", upload) for index, upload in enumerate(images)],
        embedders,
        metrics,
        label=ALL_VARIANTS,
        max_request_pixels=settings.max_request_pixels,
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
