"""The manifest schema: everything a consumer needs to run, trust and compare a published model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Artifact(_Strict):
    """One file of a version, pinned by content hash."""

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class InputSpec(_Strict):
    """How pixels must be prepared. ``size`` is (height, width); None where the graph takes any size."""

    size: tuple[int, int] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    # Per-channel, applied to 0..255 pixel values: (x - mean) / std.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Name of the 5-point template in faces.align that produced the crops (embedders only).
    alignment_template: str | None = None


class PreprocessSpec(_Strict):
    """Photo → aligned crop: every setting of decode → detect → choose a face → quality gates → align.

    The schema lives here so that a manifest can carry it typed (``model_store`` imports nothing of ours);
    ``faces.spec`` holds the presets and ``faces.pipeline.FacePipeline.from_spec`` runs it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "serving"
    detector: str = Field(default="mtcnn", description="store ref of the face detector")
    # Smallest face searched, in pixels of the image detection sees (after shrinking).
    min_face_size: int = Field(default=40, ge=12)
    # Longest side of the image detection sees, border included; larger photos are shrunk for detection
    # only (alignment reads the full-resolution pixels). None: never shrink.
    max_detect_side: int | None = Field(default=1280, ge=64)
    # Detection runs on a copy with a black border of this fraction of the longer side; alignment reads the
    # original. 0: detect on the photo as it is. Measured in reports/tight_crops.md.
    detect_pad_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    # None: every photo is detected on the bordered copy. A fraction: detect on the photo as it is first,
    # and again on the bordered copy only when no face was found or the largest face's box side exceeds
    # this fraction of the photo's shorter side (a tight portrait, where MTCNN misplaces landmarks).
    pad_when_face_exceeds: float | None = Field(default=0.75, gt=0.0)
    # No face found: one more pass with the edges replicated by this fraction of the shorter side (at least
    # 16 px). 0: no retry.
    retry_pad_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    # Which detected face a photo is about: the largest, the one nearest the image centre, or the one that
    # overlaps a given box most.
    selection: Literal["largest", "centre", "box"] = "largest"
    # Quality gates on the chosen face (a face failing one is refused, never silently replaced).
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    check_landmarks: bool = False
    min_face_px: int = Field(default=32, ge=0, description="shorter side of the chosen face's box")
    max_pixels: int = Field(default=25_000_000, ge=1, description="decoded pixels a photo may have")
    template: str = Field(default="arcface_112", description="5-point alignment template of the crops")


class OutputSpec(_Strict):
    embedding_dim: int = Field(gt=0)
    normalised: bool


class DataSource(_Strict):
    name: str
    images: int = Field(ge=0)


class Provenance(_Strict):
    data_sources: list[DataSource] = Field(default_factory=list)
    teacher: str | None = None
    seed: int | None = None
    code_commit: str | None = None
    command: str | None = None
    notes: str | None = None


class PruningRecord(BaseModel):
    """How a pruned variant was made (``faceverify prune``). Keys beyond these (run paths, the config, the
    per-layer filter counts) are kept as they were written."""

    model_config = ConfigDict(extra="allow")

    criterion: str
    removed_share: float = 0.0  # share of the parent's prunable filters removed
    pruning_ratio: float | None = None
    iterative_steps: int | None = None
    iteration: int | None = None
    params_removed_share: float | None = None
    flops_removed_share: float | None = None
    dense_params: int | None = None
    filters: dict[str, int] | None = None
    filters_removed: dict[str, int] | None = None
    checkpoint_sha256: str | None = None


class QuantizationRecord(BaseModel):
    """How an int8 variant was made from its float parent (``faceverify quantize``)."""

    model_config = ConfigDict(extra="allow")

    tool: str | None = None
    format: str
    weights: str
    activations: str
    calibration_method: str
    calibration_crops: int
    calibration_data: str | None = None
    calibration_sources: list[str] = Field(default_factory=list)
    op_types: list[str] = Field(default_factory=list)
    seed: int | None = None
    val_fraction: float | None = None
    parent_sha256: str | None = None


class Manifest(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: int = Field(ge=1)
    kind: Literal["embedder", "detector"]
    description: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    parent: str | None = Field(default=None, description="name@version this model was derived from")
    # Role → file. An embedder has one role, "model"; the MTCNN detector has "pnet", "rnet", "onet".
    artifacts: dict[str, Artifact]
    input: InputSpec
    output: OutputSpec | None = None
    params: int | None = Field(default=None, ge=0)
    flops: int | None = Field(default=None, ge=0, description="multiply-accumulates x2 for one input")
    # benchmark → figures, e.g. {"lfw": {"accuracy_mean": 0.985, ...}}
    metrics: dict[str, dict[str, float | int | str]] = Field(default_factory=dict)
    # target false-match rate (as written, e.g. "1e-3") → cosine-similarity threshold
    thresholds: dict[str, float] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)
    # How a pruned variant was made (criterion, pruning_ratio, filters removed, ...).
    pruning: PruningRecord | None = None
    # How an int8 variant was made from its float parent (``faceverify quantize``: tool, format, calibration).
    quantization: QuantizationRecord | None = None
    # The network as built (family, widths, pooling) and where it departs from its paper.
    architecture: dict[str, Any] | None = None
    # Use → the preprocessing it was measured or is served with: "serving" (what the API runs on this
    # variant), and one entry per benchmark in ``metrics`` (e.g. "lfw"). Absent in manifests published
    # before the spec existed: they were served with the serving preset and measured with its ancestors.
    preprocess: dict[str, PreprocessSpec] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def artifact(self) -> Artifact:
        """The primary artifact of a single-file model."""
        return self.artifacts["model"]
