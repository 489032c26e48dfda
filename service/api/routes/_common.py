"""Helpers shared by the face routes: reading uploads and running the pipeline off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from service.inference.embedder import Embedder
from service.inference.pipeline import FacePipeline, FaceResult, Timings


async def embed_upload(
    pipeline: FacePipeline,
    upload: UploadFile,
    embedders: Sequence[Embedder],
    timings: Timings,
    *,
    field_name: str,
    single_face: bool = False,
) -> FaceResult:
    # The whole body has already been received under the app's byte cap, so read() is bounded.
    data = await upload.read()
    return await run_in_threadpool(
        pipeline.process, data, embedders, timings, single_face=single_face, field_name=field_name
    )


async def embed_both(
    pipeline: FacePipeline,
    uploads: Sequence[tuple[str, UploadFile]],
    embedders: Sequence[Embedder],
    timings: Sequence[Timings],
) -> list[FaceResult]:
    """Process several images concurrently (two cores: a lone verify finishes in about half the time).

    Every image is finished before an error is raised, and errors are raised in request order, so the
    answer does not depend on which thread happened to fail first.
    """
    results = await asyncio.gather(
        *(
            embed_upload(pipeline, upload, embedders, timing, field_name=name)
            for (name, upload), timing in zip(uploads, timings, strict=True)
        ),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, FaceResult)]
