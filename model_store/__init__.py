"""Versioned on-disk store of published ONNX artifacts, laid out like a Triton model repository.

models/<name>/<version>/{<artifact files>, manifest.json}
models/aliases.json            {"default": "<name>@<version>", ...}
"""

from model_store.manifest import (
    Artifact,
    InputSpec,
    Manifest,
    OutputSpec,
    PreprocessSpec,
    Provenance,
    PruningRecord,
    QuantizationRecord,
)
from model_store.store import (
    DEFAULT_ROOT,
    ArtifactIntegrityError,
    ModelNotFound,
    ModelRef,
    ModelStore,
    ModelStoreError,
)

__all__ = [
    "DEFAULT_ROOT",
    "Artifact",
    "ArtifactIntegrityError",
    "InputSpec",
    "Manifest",
    "ModelNotFound",
    "ModelRef",
    "ModelStore",
    "ModelStoreError",
    "OutputSpec",
    "PreprocessSpec",
    "Provenance",
    "PruningRecord",
    "QuantizationRecord",
]
