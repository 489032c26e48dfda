"""The heavy, long-lived objects of one app: built once in ``lifespan``, kept on ``app.state``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from faces.detect import MTCNNDetector
from faces.pipeline import FacePipeline
from faces.variants import VariantRegistry
from model_store import ModelStore
from service.config import Settings
from service.gallery import Gallery, PostgresOptions, open_gallery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    store: ModelStore
    detector: MTCNNDetector
    detector_ref: str
    variants: VariantRegistry
    pipeline: FacePipeline
    gallery: Gallery

    def close(self) -> None:
        self.gallery.close()


def build_resources(settings: Settings) -> Resources:
    store = ModelStore(settings.store_path)
    pipeline = FacePipeline.from_spec(
        settings.preprocess_spec(), store, intra_op_threads=settings.intra_op_threads
    )
    detector_ref = pipeline.spec.detector
    variants = VariantRegistry.load(
        store,
        default=settings.default_variant,
        target_fmr=settings.target_fmr,
        intra_op_threads=settings.intra_op_threads,
        only=settings.served_variant_list,
    )
    gallery = open_gallery(
        settings.gallery_url,
        PostgresOptions(
            pool_size=settings.gallery_pool_size,
            search=settings.gallery_search,
            candidates=settings.gallery_hnsw_candidates,
        ),
    )
    log.info(
        "loaded detector %s and variants %s (default %s)",
        detector_ref,
        ", ".join(variants.embedders) or "none",
        variants.default_ref,
    )
    return Resources(
        settings=settings,
        store=store,
        detector=pipeline.detector,
        detector_ref=detector_ref,
        variants=variants,
        pipeline=pipeline,
        gallery=gallery,
    )
