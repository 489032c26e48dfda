"""Shared by the face routes: uploads through the pipeline, off the event loop, with stage metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import anyio
from fastapi import UploadFile

from faces.decode import probe_image
from faces.embed import Embedder
from faces.pipeline import FacePipeline, FaceResult, Timings
from service.api.admission import ImageAdmission
from service.errors import DomainError, ImageTooLarge
from service.metrics import Metrics


async def embed_uploads(
    pipeline: FacePipeline,
    admission: ImageAdmission,
    uploads: Sequence[tuple[str, UploadFile]],
    embedders: Sequence[Embedder],
    metrics: Metrics,
    *,
    label: str,
    max_request_pixels: int,
    single_face: bool = False,
) -> list[FaceResult]:
    """Embed the largest face of each (field name, upload) with every embedder.

    First every header is read (format, size: nothing decoded) and the request's pixels are summed against
    ``max_request_pixels``; then the images go through ``admission`` (a small pool per process). The answer
    does not depend on timing: the error reported is the first failing image in request order, and once one
    has failed, images after it are not started (they could not change the answer).
    ``label`` is the variant label of the stage metrics.
    """
    blobs = [(name, await upload.read()) for name, upload in uploads]  # bounded by the body cap
    sizes = []
    for name, data in blobs:
        try:
            sizes.append(probe_image(data).pixels)
        except DomainError as error:
            error.field = error.field or name
            raise
    if sum(sizes) > max_request_pixels:
        raise ImageTooLarge(
            f"The images of this request have {sum(sizes)} pixels together; "
            f"the limit is {max_request_pixels}."
        )

    ticket = admission.ticket()  # the queue timeout runs from here: a slow upload does not count
    timings = [Timings(label) for _ in blobs]
    results: list[FaceResult | None] = [None] * len(blobs)
    errors: dict[int, DomainError] = {}
    first_failed = math.inf

    def work(index: int) -> FaceResult | None:
        if index > first_failed:  # checked when its turn comes, in the pool's thread
            return None
        name, data = blobs[index]
        process = partial(pipeline.process, single_face=single_face, field_name=name)
        return process(data, embedders, timings[index])

    async def one(index: int) -> None:
        nonlocal first_failed
        try:
            results[index] = await admission.run(sizes[index], work, index, ticket=ticket)
        except DomainError as error:
            errors[index] = error
            first_failed = min(first_failed, index)

    try:
        async with anyio.create_task_group() as group:
            for index in range(len(blobs)):
                group.start_soon(one, index)
    finally:
        for timing in timings:
            metrics.observe_stages(timing.records)
    if errors:
        raise errors[min(errors)]
    return [r for r in results if r is not None]
