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
    # Free-form record of how a pruned variant was made (criterion, pruning_ratio, ...).
    pruning: dict[str, Any] | None = None
    # How an int8 variant was made from its float parent (``faceverify quantize``: tool, format, calibration).
    quantization: dict[str, Any] | None = None
    # The network as built (family, widths, pooling) and where it departs from its paper.
    architecture: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def artifact(self) -> Artifact:
        """The primary artifact of a single-file model."""
        return self.artifacts["model"]
