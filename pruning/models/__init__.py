"""Model factories with metadata (input size, normalisation, template), timm style."""

from pruning.models.squeezefacenet import (
    MODEL_CARD,
    SqueezeFaceNet,
    SqueezeFaceNetConfig,
    architecture_record,
    count_flops,
    count_params,
    create_model,
    with_pooling,
)

__all__ = [
    "MODEL_CARD",
    "SqueezeFaceNet",
    "SqueezeFaceNetConfig",
    "architecture_record",
    "count_flops",
    "count_params",
    "create_model",
    "with_pooling",
]
