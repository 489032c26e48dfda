"""Model factories with metadata (input size, normalisation, template), timm style.

``create_model(family=...)`` builds any registered family; a saved architecture (a config dict) names its
family under ``"family"``; one without it is a SqueezeFaceNet (checkpoints written before the other
families existed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pruning.models.base import INPUT_CARD, FaceEmbedder, InputCard, ModelCard
from pruning.models.mobilenetv2 import MobileNetV2Face, MobileNetV2FaceConfig
from pruning.models.resnet50 import ResNet50Face, ResNet50FaceConfig
from pruning.models.squeezefacenet import (
    MODEL_CARD,
    SqueezeFaceNet,
    SqueezeFaceNetConfig,
    count_flops,
    count_params,
    with_pooling,
)

DEFAULT_FAMILY = "squeezefacenet"


@dataclass(frozen=True)
class Family:
    name: str
    model: type[FaceEmbedder]
    config: type
    from_dict: Callable[[dict[str, object]], object]


def _families() -> dict[str, Family]:
    families = [
        Family("squeezefacenet", SqueezeFaceNet, SqueezeFaceNetConfig, SqueezeFaceNetConfig.from_dict),
        Family("mobilenetv2", MobileNetV2Face, MobileNetV2FaceConfig, MobileNetV2FaceConfig.from_dict),
        Family("resnet50", ResNet50Face, ResNet50FaceConfig, ResNet50FaceConfig.from_dict),
    ]
    return {f.name: f for f in families}


FAMILIES = _families()


def create_model(
    config: object | dict[str, object] | None = None, *, family: str | None = None
) -> FaceEmbedder:
    """A fresh network: from a config object, a saved architecture dict, or a family's defaults."""
    if isinstance(config, dict):
        data = dict(config)
        named = str(data.pop("family", family or DEFAULT_FAMILY))
        if family is not None and named != family:
            raise ValueError(f"architecture is a {named}, not a {family}")
        entry = _family(named)
        return entry.model(entry.from_dict(data) if data else None)  # type: ignore[call-arg]
    if config is None:
        entry = _family(family or DEFAULT_FAMILY)
        return entry.model()
    for entry in FAMILIES.values():
        if isinstance(config, entry.config):
            return entry.model(config)  # type: ignore[call-arg]
    raise TypeError(f"not a model config: {type(config).__name__}")


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]


def saved_architecture(model: FaceEmbedder) -> dict[str, object]:
    """The config dict a checkpoint stores: every width plus the family that reads them."""
    return model.config.to_dict() | {"family": model.family}  # type: ignore[attr-defined]


def architecture_record(model: FaceEmbedder) -> dict[str, object]:
    """The manifest's ``architecture`` record of any family."""
    return model.architecture_record()


__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "INPUT_CARD",
    "MODEL_CARD",
    "FaceEmbedder",
    "Family",
    "InputCard",
    "MobileNetV2Face",
    "MobileNetV2FaceConfig",
    "ModelCard",
    "ResNet50Face",
    "ResNet50FaceConfig",
    "SqueezeFaceNet",
    "SqueezeFaceNetConfig",
    "architecture_record",
    "count_flops",
    "count_params",
    "create_model",
    "saved_architecture",
    "with_pooling",
]
