"""Shared by the face routes: uploads through the pipeline, off the event loop, with stage metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from service.inference.embedder import Embedder
from service.inference.pipeline import FacePipeline, FaceResult, Timings
from service.metrics import Metrics


async def embed_uploads(
    pipeline: FacePipeline,
    uploads: Sequence[tuple[str, UploadFile]],
    embedders: Sequence[Embedder],
    metrics: Metrics,
    *,
    label: str,
    single_face: bool = False,
) -> list[FaceResult]:
    """Embed the largest face of each (field name, upload) with every embedder; one thread per image.

    The images run concurrently (on two cores a lone verify finishes in about half the time). Every image
    is finished before an error is raised, and errors are raised in request order, so the answer does not
    depend on which thread happened to fail first. ``label`` is the variant label of the stage metrics.
    """
    timings = [Timings(label) for _ in uploads]

    async def one(name: str, upload: UploadFile, timing: Timings) -> FaceResult:
        # The whole body was received under the app's byte cap, so read() is bounded.
        data = await upload.read()
        return await run_in_threadpool(
            pipeline.process, data, embedders, timing, single_face=single_face, field_name=name
        )

    try:
        results = await asyncio.gather(
            *(one(name, upload, timing) for (name, upload), timing in zip(uploads, timings, strict=True)),
            return_exceptions=True,
        )
    finally:
        for timing in timings:
            metrics.observe_stages(timing.records)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, FaceResult)]
