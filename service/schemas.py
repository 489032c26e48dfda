"""Response bodies of the REST API (request bodies are multipart forms, declared on the routes)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from faces.detect import Face

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$"
USER_ID_DESCRIPTION = "Your identifier for the person: 1–128 characters of letters, digits and _ . @ : -"


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


class FaceSummary(BaseModel):
    """What the detector found in one image; ``box`` and ``score`` describe the face that was used."""

    count: int = Field(description="Faces found in the image (the largest one is used)", ge=0)
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the upright image", min_length=4)
    score: float = Field(description="Detector confidence of that face, 0–1")

    model_config = _examples({"count": 1, "box": [71.5, 52.3, 181.0, 190.4], "score": 0.99987})

    @classmethod
    def of(cls, face: Face, count: int) -> FaceSummary:
        return cls(count=count, box=[round(float(v), 1) for v in face.box], score=round(face.score, 5))


class VerifyResponse(BaseModel):
    match: bool = Field(description="score >= threshold")
    score: float = Field(description="Cosine similarity of the two faces' embeddings, -1–1")
    threshold: float = Field(description="The variant's calibrated threshold at the service's target FMR")
    variant: str = Field(description="name@version of the embedding model used")
    faces: list[FaceSummary] = Field(description="One entry per image: image_a, then image_b")

    model_config = _examples(
        {
            "match": True,
            "score": 0.7312,
            "threshold": 0.4521,
            "variant": "squeezefacenet@1",
            "faces": [
                {"count": 1, "box": [71.5, 52.3, 181.0, 190.4], "score": 0.99987},
                {"count": 2, "box": [40.0, 38.9, 160.2, 190.0], "score": 0.99912},
            ],
        }
    )


class EnrollResponse(BaseModel):
    user_id: str
    images: int = Field(description="Images accepted (each gave one template per variant)")
    templates_added: dict[str, int] = Field(description="Variant (name@version) → templates added")
    total_templates: int = Field(description="The user's templates after this enrolment, all variants")
    faces: list[FaceSummary] = Field(description="One entry per image, in the order sent")

    model_config = _examples(
        {
            "user_id": "alice",
            "images": 2,
            "templates_added": {"squeezefacenet@1": 2, "squeezefacenet-pruned@1": 2},
            "total_templates": 4,
            "faces": [
                {"count": 1, "box": [71.5, 52.3, 181.0, 190.4], "score": 0.99987},
                {"count": 1, "box": [60.1, 44.0, 170.3, 186.7], "score": 0.99954},
            ],
        }
    )


class Candidate(BaseModel):
    user_id: str
    score: float = Field(description="Best cosine similarity over the user's templates of this variant")


class IdentifyResponse(BaseModel):
    variant: str
    threshold: float
    candidates: list[Candidate] = Field(description="Users whose score passes the threshold, best first")
    face: FaceSummary

    model_config = _examples(
        {
            "variant": "squeezefacenet@1",
            "threshold": 0.4521,
            "candidates": [{"user_id": "alice", "score": 0.802}, {"user_id": "carol", "score": 0.471}],
            "face": {"count": 1, "box": [71.5, 52.3, 181.0, 190.4], "score": 0.99987},
        }
    )


class TemplateGroup(BaseModel):
    variant: str = Field(description="name@version of the model that made these templates")
    model_sha256: str
    count: int
    served: bool = Field(description="Whether that exact model is loaded (else the templates are dormant)")


class UserResponse(BaseModel):
    user_id: str
    total_templates: int
    templates: list[TemplateGroup]

    model_config = _examples(
        {
            "user_id": "alice",
            "total_templates": 2,
            "templates": [
                {"variant": "squeezefacenet@1", "model_sha256": "3f5c…", "count": 2, "served": True},
            ],
        }
    )


class DeleteUserResponse(BaseModel):
    user_id: str
    deleted_templates: int

    model_config = _examples({"user_id": "alice", "deleted_templates": 4})


class PruningSummary(BaseModel):
    """How a pruned variant was derived from its parent (``faceverify prune``)."""

    criterion: str = Field(description="Filter ranking: taylor, l1, random, ...")
    filters_removed_share: float = Field(description="Share of the parent's prunable filters removed")
    params_removed_share: float | None = Field(description="Share of the parent's parameters removed")
    flops_removed_share: float | None


class QuantizationSummary(BaseModel):
    """How an int8 variant was made from its float parent (``faceverify quantize``)."""

    format: str = Field(description="ONNX quantisation format, e.g. QDQ")
    weights: str = Field(description="e.g. int8, per channel")
    activations: str
    calibration_method: str = Field(description="How activation ranges were set: minmax, entropy, ...")
    calibration_crops: int = Field(description="Validation crops the ranges were calibrated on")


class ModelVariant(BaseModel):
    ref: str = Field(description="name@version; send it (or the name, or an alias) in X-Model-Variant")
    name: str
    version: int
    default: bool
    aliases: list[str]
    description: str
    params: int | None
    flops: int | None
    embedding_dim: int
    input_size: tuple[int, int] | None
    alignment_template: str
    thresholds: dict[str, float] = Field(description="Target false-match rate → cosine threshold")
    threshold: float = Field(description="The threshold this service decides with")
    sha256: str
    parent: str | None
    pruning: PruningSummary | None = Field(description="Set for pruned variants")
    quantization: QuantizationSummary | None = Field(default=None, description="Set for int8 variants")
    metrics: dict[str, dict[str, float | int | str]]


class ModelsResponse(BaseModel):
    default: str | None = Field(description="Variant used when X-Model-Variant is absent")
    target_fmr: str
    detector: str
    variants: list[ModelVariant]

    model_config = _examples(
        {
            "default": "squeezefacenet@1",
            "target_fmr": "1e-3",
            "detector": "mtcnn@3",
            "variants": [
                {
                    "ref": "squeezefacenet@1",
                    "name": "squeezefacenet",
                    "version": 1,
                    "default": True,
                    "aliases": ["default"],
                    "description": "SqueezeNet face embedder distilled from dlib",
                    "params": 730000,
                    "flops": 110000000,
                    "embedding_dim": 128,
                    "input_size": [112, 112],
                    "alignment_template": "arcface_112",
                    "thresholds": {"1e-3": 0.4521},
                    "threshold": 0.4521,
                    "sha256": "3f5c…",
                    "parent": None,
                    "pruning": None,
                    "metrics": {"lfw": {"accuracy_mean": 0.975}},
                }
            ],
        }
    )


class Problem(BaseModel):
    """RFC 9457 problem details (media type application/problem+json)."""

    type: str
    title: str
    status: int
    code: str = Field(description="Stable machine-readable error code")
    detail: str
    field: str | None = Field(default=None, description="The request part at fault, when one is")

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:faceverify:error:no_face_detected",
                    "title": "No face detected",
                    "status": 422,
                    "code": "no_face_detected",
                    "detail": "No face was found in image_b.",
                    "field": "image_b",
                }
            ]
        },
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready or not_ready")
    checks: dict[str, str] = Field(description="Each check: ok or what is wrong")
    detector: str | None = None
    default_variant: str | None = None
    variants: list[str] = Field(default_factory=list)
