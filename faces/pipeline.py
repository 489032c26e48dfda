"""One photo through decode → detect → choose a face → quality gates → align → embed, from one spec.

The service, ``faceverify prep``/``eval``/``detect``/``publish`` and ``bench/`` all build this object from a
:class:`~faces.spec.PreprocessSpec` (``FacePipeline.from_spec``): there is no second assembly of the steps.
Everything here is blocking CPU work; the routes call it through a thread pool. It holds no per-request
state, and ONNX Runtime sessions accept concurrent ``run`` calls, so one pipeline serves all requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np

from faces.align import align_face
from faces.decode import decode_image
from faces.detect import DetectorConfig, Face, MTCNNDetector, shrink_for_detection
from faces.embed import Embedder
from faces.errors import DomainError, FaceTooSmall, MultipleFaces, NoFaceDetected
from faces.quality import Rejection, gate, select_face
from faces.spec import SERVING, PreprocessSpec
from model_store import ModelStore

_MIN_RETRY_PAD_PX = 16


@dataclass
class Timings:
    """(stage, variant label, seconds) records, turned into histogram observations by the caller."""

    variant: str
    records: list[tuple[str, str, float]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, variant: str | None = None) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.records.append((name, variant or self.variant, time.perf_counter() - start))


@dataclass(frozen=True)
class Acquired:
    """What the spec made of one photo: every face found, the chosen one, and why it was refused if it was."""

    faces: list[Face]
    face: Face | None
    rejection: Rejection | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.face is not None and self.rejection is None


@dataclass(frozen=True)
class FaceResult:
    """The face a request is about, and its embedding under each requested variant (ref → (D,) vector)."""

    face: Face
    face_count: int
    embeddings: dict[str, np.ndarray]


class FacePipeline:
    def __init__(self, detector: MTCNNDetector, spec: PreprocessSpec = SERVING) -> None:
        if detector.config.min_face_size != spec.min_face_size or detector.config.max_image_side is not None:
            # The spec owns the pyramid and the shrinking; a detector configured otherwise would make other
            # crops than the spec says.
            raise ValueError("the detector's config must come from the spec (FacePipeline.from_spec)")
        self.detector = detector
        self.spec = spec

    @classmethod
    def from_spec(
        cls, spec: PreprocessSpec, store: ModelStore | None = None, *, intra_op_threads: int = 1
    ) -> FacePipeline:
        store = store or ModelStore()
        # Pinned to the exact version, so that a manifest recording this spec names the detector it used.
        spec = spec.model_copy(update={"detector": str(store.resolve(spec.detector))})
        detector = MTCNNDetector.from_store(store, spec.detector, detector_config(spec, intra_op_threads))
        return cls(detector, spec)

    # ---- the steps --------------------------------------------------------------------------------
    def decode(self, data: bytes) -> np.ndarray:
        return decode_image(data, max_pixels=self.spec.max_pixels)  # errors already carry a client message

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first, in ``image``'s coordinates, found the spec's way.

        A large photo is shrunk to ``max_detect_side`` once, here, and every pass works on that copy (the
        bordered pass shrinks it further so that photo and border fit the budget): padding the
        full-resolution image would copy tens of megabytes only to shrink them again.

        ``detect_pad_fraction``: MTCNN needs context around a face. On a tight portrait it often still finds
        the face but misplaces the landmarks (crops of a nose or a mouth); a black border restores the
        context, and alignment reads the original pixels; with ``pad_when_face_exceeds`` only photos whose
        face fills the frame pay for the bordered pass. ``retry_pad_fraction``: a photo without any face
        gets a second look with its edges replicated (as alignment's BORDER_REPLICATE does), where MTCNN's
        candidate windows would otherwise reach outside the image. Costs a second pass only on face-less
        photos.
        """
        spec = self.spec
        small, shrink = shrink_for_detection(image, spec.max_detect_side)
        if spec.detect_pad_fraction == 0:
            faces = self.detector.detect(small)
        elif spec.pad_when_face_exceeds is None:
            faces = self._detect_padded(small)
        else:
            faces = self.detector.detect(small)
            if not faces or max(faces[0].width, faces[0].height) > spec.pad_when_face_exceeds * min(
                small.shape[:2]
            ):
                faces = self._detect_padded(small) or faces
        if not faces and spec.retry_pad_fraction > 0:
            pad = max(_MIN_RETRY_PAD_PX, spec.retry_pad_fraction * min(small.shape[:2]))
            faces = self._detect_bordered(small, pad, cv2.BORDER_REPLICATE)
        if shrink == 1.0:
            return faces
        scale = np.float32(1.0 / shrink)
        return [Face(box=f.box * scale, score=f.score, landmarks=f.landmarks * scale) for f in faces]

    def _detect_padded(self, small: np.ndarray) -> list[Face]:
        """The black-bordered pass, on a copy shrunk so that image and border fit ``max_detect_side``."""
        fraction = self.spec.detect_pad_fraction
        budget = self.spec.max_detect_side
        smaller, shrink = shrink_for_detection(
            small, None if budget is None else max(1, int(budget / (1 + 2 * fraction)))
        )
        faces = self._detect_bordered(smaller, fraction * max(smaller.shape[:2]), cv2.BORDER_CONSTANT)
        if shrink == 1.0:
            return faces
        scale = np.float32(1.0 / shrink)
        return [Face(box=f.box * scale, score=f.score, landmarks=f.landmarks * scale) for f in faces]

    def _detect_bordered(self, image: np.ndarray, pad: float, border: int) -> list[Face]:
        pad_px = round(pad)
        if pad_px == 0:
            return self.detector.detect(image)
        padded = cv2.copyMakeBorder(image, pad_px, pad_px, pad_px, pad_px, border, value=0)
        offset = np.float32(pad_px)
        return [
            Face(box=f.box - offset, score=f.score, landmarks=f.landmarks - offset)
            for f in self.detector.detect(padded)
        ]

    def acquire(self, image: np.ndarray, *, box: np.ndarray | None = None) -> Acquired:
        """Detect, choose the face the photo is about, and apply the quality gates."""
        faces = self.detect(image)
        face = select_face(faces, image.shape[0], image.shape[1], self.spec, box)
        if face is None:
            return Acquired(faces, None, "no_face", "no face found")
        failed = gate(face, self.spec)
        if failed:
            return Acquired(faces, face, *failed)
        return Acquired(faces, face)

    def align(self, image: np.ndarray, face: Face, template: str | None = None) -> np.ndarray:
        """(112, 112, 3) uint8 crop; ``template``: a variant's own (its manifest), else the spec's."""
        return align_face(image, face.landmarks, template or self.spec.template)

    def crop(self, data: bytes) -> tuple[Acquired, np.ndarray | None]:
        """Photo bytes → what was found and the aligned crop of the chosen face (None when refused)."""
        image = self.decode(data)
        found = self.acquire(image)
        return found, (self.align(image, found.face) if found.ok and found.face is not None else None)

    # ---- one request --------------------------------------------------------------------------------
    def process(
        self,
        data: bytes,
        embedders: Sequence[Embedder],
        timings: Timings,
        *,
        single_face: bool = False,
        field_name: str | None = None,
    ) -> FaceResult:
        """Embed the face ``data`` is about with every embedder given.

        ``single_face`` refuses photos with more than one face (enrolment must not guess who is meant);
        ``field_name`` names the request part in errors. Raises the typed errors of ``faces.errors``.
        """
        try:
            return self._process(data, embedders, timings, single_face=single_face, field_name=field_name)
        except DomainError as error:
            error.field = error.field or field_name  # which upload it was, for the problem document
            raise

    def _process(
        self,
        data: bytes,
        embedders: Sequence[Embedder],
        timings: Timings,
        *,
        single_face: bool,
        field_name: str | None,
    ) -> FaceResult:
        with timings.stage("decode"):
            image = self.decode(data)
        with timings.stage("detect"):
            found = self.acquire(image)
        where = f" in {field_name}" if field_name else ""
        if found.face is None:
            raise NoFaceDetected(f"No face was found{where}.")
        if single_face and len(found.faces) > 1:
            raise MultipleFaces(
                f"{len(found.faces)} faces were found{where}; an enrolment photo must show one person.",
                face_count=len(found.faces),
            )
        if found.rejection == "too_small":
            raise FaceTooSmall(
                f"The face{where} is smaller than {self.spec.min_face_px} pixels; "
                "send a closer or sharper photo."
            )
        if found.rejection is not None:  # low score or implausible landmarks: not a face we can trust
            raise NoFaceDetected(f"No usable face was found{where}.")
        face = found.face
        embeddings: dict[str, np.ndarray] = {}
        crops: dict[str, np.ndarray] = {}  # template name → crop, shared by variants on the same template
        for embedder in embedders:
            crop = crops.get(embedder.template)
            if crop is None:
                with timings.stage("align"):
                    crop = self.align(image, face, embedder.template)[None]
                crops[embedder.template] = crop
            with timings.stage("embed", embedder.ref):
                embeddings[embedder.ref] = embedder.embed(crop)[0]
        return FaceResult(face=face, face_count=len(found.faces), embeddings=embeddings)


def detector_config(spec: PreprocessSpec, intra_op_threads: int = 1) -> DetectorConfig:
    # No max_image_side: the pipeline shrinks, so that the border is part of the budget.
    return DetectorConfig(min_face_size=spec.min_face_size, intra_op_threads=intra_op_threads)
