"""POST /v1/identify: who, among the enrolled users, is in this photo?"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from faces import decision
from service.api.deps import (
    AdmissionDep,
    EmbedderDep,
    GalleryDep,
    MetricsDep,
    PipelineDep,
    SettingsDep,
    sent_once,
)
from service.api.errors import IMAGE_ERRORS, problem_responses
from service.api.routes import API_PREFIX
from service.api.routes._common import embed_uploads
from service.gallery import gallery_key
from service.schemas import Candidate, FaceSummary, IdentifyResponse

router = APIRouter(prefix=API_PREFIX, tags=["gallery"])


@router.post(
    "/identify",
    summary="Find enrolled users matching the largest face of a photo",
    response_model=IdentifyResponse,
    dependencies=[sent_once("image")],
    responses=problem_responses(*IMAGE_ERRORS, "unknown_variant"),
)
async def identify(
    image: Annotated[UploadFile, File(description="JPEG, PNG or WebP photo")],
    embedder: EmbedderDep,
    pipeline: PipelineDep,
    admission: AdmissionDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    top_k: Annotated[int | None, Query(ge=1, le=100, description="At most this many users")] = None,
) -> IdentifyResponse:
    (result,) = await embed_uploads(
        pipeline,
        admission,
        [("image", image)],
        [embedder],
        metrics,
        label=embedder.ref,
        max_request_pixels=settings.max_request_pixels,
    )
    threshold = embedder.threshold(settings.target_fmr)
    start = time.perf_counter()
    matches = await run_in_threadpool(
        gallery.search,
        gallery_key(embedder),
        result.embeddings[embedder.ref],
        top_k or settings.identify_top_k,
    )
    metrics.observe_stages([("match", embedder.ref, time.perf_counter() - start)])
    candidates = [
        Candidate(user_id=m.user_id, score=round(m.score, 6))
        for m in matches
        if decision.is_match(m.score, threshold)
    ]
    metrics.decision(bool(candidates), embedder.ref)
    return IdentifyResponse(
        variant=embedder.ref,
        threshold=threshold,
        candidates=candidates,
        face=FaceSummary.of(result.face, result.face_count),
    )
