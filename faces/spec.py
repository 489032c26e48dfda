"""The preprocessing spec every photo goes through, and its named presets.

One geometry for everything: the service, ``faceverify prep`` (training crops), ``eval``/``publish`` and
``faceverify detect`` detect, pad, choose and align a face the same way, so a published figure is what the
API gives. Presets differ only where they must:

* ``SERVING``: what the API runs; the default of every tool.
* ``TRAINING``: the same geometry, stricter gates (a doubtful face must not become a training crop) and a
  larger pixel cap (dataset originals). A crop it accepts is the crop the service would make.
* ``BENCHMARK``: the same, but the face nearest the centre; benchmarks like LFW label the centred person,
  and the largest face is a bystander in ~2.4 % of LFW photos.

The schema itself is :class:`model_store.PreprocessSpec`, so that manifests carry it typed.
"""

from __future__ import annotations

from model_store import ModelNotFound, ModelStore, PreprocessSpec

__all__ = ["BENCHMARK", "PRESETS", "SERVING", "TRAINING", "PreprocessSpec", "manifest_record", "preset"]

SERVING = PreprocessSpec(name="serving")
TRAINING = SERVING.model_copy(
    update={"name": "training", "min_score": 0.9, "check_landmarks": True, "max_pixels": 40_000_000}
)
BENCHMARK = SERVING.model_copy(update={"name": "benchmark", "selection": "centre", "max_pixels": 50_000_000})

PRESETS = {spec.name: spec for spec in (SERVING, TRAINING, BENCHMARK)}


def preset(name: str) -> PreprocessSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preprocessing preset {name!r}; known: {', '.join(PRESETS)}") from None


def same_geometry(a: PreprocessSpec, b: PreprocessSpec) -> bool:
    """Whether two specs make the same crop of a face they both accept (limits and gates aside)."""
    fields = (
        "detector",
        "min_face_size",
        "max_detect_side",
        "detect_pad_fraction",
        "pad_when_face_exceeds",
        "retry_pad_fraction",
    )
    return all(getattr(a, f) == getattr(b, f) for f in (*fields, "template"))


def manifest_record(store: ModelStore, **measured: PreprocessSpec) -> dict[str, PreprocessSpec]:
    """A manifest's ``preprocess`` section: the serving spec (detector pinned to its version) and the spec
    each benchmark of ``metrics`` was measured with (``lfw=...``)."""
    try:
        detector = str(store.resolve(SERVING.detector))
    except ModelNotFound:  # a store of embedders only: the detector is the one the serving store resolves
        detector = SERVING.detector
    return {"serving": SERVING.model_copy(update={"detector": detector}), **measured}
