"""POST /v1/verify: are the people in two photos the same person?"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from faces import decision
from service.api.deps import AdmissionDep, EmbedderDep, MetricsDep, PipelineDep, SettingsDep, sent_once
from service.api.errors import IMAGE_ERRORS, problem_responses
from service.api.routes import API_PREFIX
from service.api.routes._common import embed_uploads
from service.schemas import FaceSummary, VerifyResponse

router = APIRouter(prefix=API_PREFIX, tags=["faces"])


@router.post(
    "/verify",
    summary="Compare the largest face of two photos",
    response_model=VerifyResponse,
    dependencies=[sent_once("image_a", "image_b")],
    responses=problem_responses(*IMAGE_ERRORS, "unknown_variant"),
)
async def verify(
    image_a: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    image_b: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    embedder: EmbedderDep,
    pipeline: PipelineDep,
    admission: AdmissionDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> VerifyResponse:
    a, b = await embed_uploads(
        pipeline,
        admission,
        [("image_a", image_a), ("image_b", image_b)],
        [embedder],
        metrics,
        label=embedder.ref,
        max_request_pixels=settings.max_request_pixels,
    )
    start = time.perf_counter()
    verdict = decision.verify(
        embedder, a.embeddings[embedder.ref], b.embeddings[embedder.ref], settings.target_fmr
    )
    metrics.observe_stages([("match", embedder.ref, time.perf_counter() - start)])
    metrics.decision(verdict.match, embedder.ref)
    return VerifyResponse(
        match=verdict.match,
        score=round(verdict.score, 6),
        threshold=verdict.threshold,
        variant=embedder.ref,
        faces=[FaceSummary.of(a.face, a.face_count), FaceSummary.of(b.face, b.face_count)],
    )
