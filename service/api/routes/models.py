"""GET /v1/models: the embedding variants this process serves."""

from __future__ import annotations

from fastapi import APIRouter

from model_store import Manifest
from service.api.deps import ResourcesDep
from service.api.errors import problem_responses
from service.api.routes import API_PREFIX
from service.schemas import ModelsResponse, ModelVariant, PruningSummary, QuantizationSummary

router = APIRouter(prefix=API_PREFIX, tags=["models"])


@router.get(
    "/models",
    summary="Served variants, their versions, sizes and thresholds, and which is the default",
    response_model=ModelsResponse,
    responses=problem_responses(),
)
async def list_models(resources: ResourcesDep) -> ModelsResponse:
    registry = resources.variants
    fmr = resources.settings.target_fmr
    variants = []
    for ref, embedder in registry.embedders.items():
        manifest = embedder.manifest
        variants.append(
            ModelVariant(
                ref=ref,
                name=manifest.name,
                version=manifest.version,
                default=ref == registry.default_ref,
                aliases=sorted(a for a, target in registry.aliases.items() if target == ref),
                description=manifest.description,
                params=manifest.params,
                flops=manifest.flops,
                embedding_dim=embedder.dim,
                input_size=manifest.input.size,
                alignment_template=embedder.template,
                thresholds=manifest.thresholds,
                threshold=embedder.threshold(fmr),
                sha256=embedder.sha256,
                parent=manifest.parent,
                pruning=pruning_summary(manifest),
                quantization=quantization_summary(manifest),
                metrics=manifest.metrics,
            )
        )
    return ModelsResponse(
        default=registry.default_ref, target_fmr=fmr, detector=resources.detector_ref, variants=variants
    )


def pruning_summary(manifest: Manifest) -> PruningSummary | None:
    """The client-facing part of a manifest's pruning record (its run paths and config stay internal)."""
    record = manifest.pruning
    if record is None:
        return None
    return PruningSummary(
        criterion=record.criterion,
        filters_removed_share=record.removed_share,
        params_removed_share=record.params_removed_share,
        flops_removed_share=record.flops_removed_share,
    )


def quantization_summary(manifest: Manifest) -> QuantizationSummary | None:
    record = manifest.quantization
    if record is None:
        return None
    return QuantizationSummary(
        format=record.format,
        weights=record.weights,
        activations=record.activations,
        calibration_method=record.calibration_method,
        calibration_crops=record.calibration_crops,
    )
