"""Application factory. Heavy resources (ONNX sessions) are built once in ``lifespan``, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from model_store import ModelStore
from service.api.routes import health
from service.config import Settings
from service.vision.detect import DetectorConfig, MTCNNDetector


@dataclass(frozen=True)
class Resources:
    settings: Settings
    store: ModelStore
    detector: MTCNNDetector
    detector_ref: str


def build_resources(settings: Settings) -> Resources:
    store = ModelStore(settings.store_path)
    detector_ref = str(store.resolve(settings.detector_model))
    detector = MTCNNDetector.from_store(
        store,
        detector_ref,
        DetectorConfig(
            min_face_size=settings.min_face_size,
            max_image_side=settings.max_detect_side,
            intra_op_threads=settings.intra_op_threads,
        ),
    )
    return Resources(settings=settings, store=store, detector=detector, detector_ref=detector_ref)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.resources = build_resources(settings)
        yield
        app.state.resources = None

    app = FastAPI(title="SqueezerFaceNet face verification", version="0.1.0", lifespan=lifespan)
    app.include_router(health.router)
    return app
