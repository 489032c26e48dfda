"""One image through decode → detect → align → embed, timing each stage.

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
from faces.detect import Face, MTCNNDetector, shrink_for_detection
from faces.embed import Embedder
from faces.errors import DomainError, FaceTooSmall, MultipleFaces, NoFaceDetected

# Border added for the second detection pass, as a fraction of the image's shorter side (at least 16 px).
_RETRY_PAD_FRACTION = 0.2
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
class FaceResult:
    """The face a request is about, and its embedding under each requested variant (ref → (D,) vector)."""

    face: Face
    face_count: int
    embeddings: dict[str, np.ndarray]


class FacePipeline:
    def __init__(self, detector: MTCNNDetector, *, max_pixels: int, min_face_px: int) -> None:
        self.detector = detector
        self.max_pixels = max_pixels
        self.min_face_px = min_face_px

    def process(
        self,
        data: bytes,
        embedders: Sequence[Embedder],
        timings: Timings,
        *,
        single_face: bool = False,
        field_name: str | None = None,
    ) -> FaceResult:
        """Embed the largest face of ``data`` with every embedder given.

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
            image = decode_image(data, max_pixels=self.max_pixels)  # errors already carry a client message
        with timings.stage("detect"):
            faces = self.detect(image)
        where = f" in {field_name}" if field_name else ""
        if not faces:
            raise NoFaceDetected(f"No face was found{where}.")
        if single_face and len(faces) > 1:
            raise MultipleFaces(
                f"{len(faces)} faces were found{where}; an enrolment photo must show one person.",
                face_count=len(faces),
            )
        face = faces[0]  # largest first
        if min(face.width, face.height) < self.min_face_px:
            raise FaceTooSmall(
                f"The face{where} is smaller than {self.min_face_px} pixels; send a closer or sharper photo."
            )
        embeddings: dict[str, np.ndarray] = {}
        crops: dict[str, np.ndarray] = {}  # template name → crop, shared by variants on the same template
        for embedder in embedders:
            crop = crops.get(embedder.template)
            if crop is None:
                with timings.stage("align"):
                    crop = align_face(image, face.landmarks, embedder.template)[None]
                crops[embedder.template] = crop
            with timings.stage("embed", embedder.ref):
                embeddings[embedder.ref] = embedder.embed(crop)[0]
        return FaceResult(face=face, face_count=len(faces), embeddings=embeddings)

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces, largest first; a photo without any gets a second look with a border added.

        Clients often send tight face crops (ID-photo crops, the output of another detector). There the face
        touches the edges, MTCNN's candidate windows would reach outside the image, and it finds nothing.
        Replicating the edge (as alignment's BORDER_REPLICATE does) restores the context; the results are
        shifted back into the original image's coordinates. Costs a second pass only on face-less photos.

        A large photo is shrunk once, here, and both passes run on the small copy: padding the
        full-resolution image would copy tens of megabytes only to shrink them again.
        """
        small, shrink = shrink_for_detection(image, self.detector.config.max_image_side)
        faces = self.detector.detect(small)
        if not faces:
            pad = max(_MIN_RETRY_PAD_PX, round(_RETRY_PAD_FRACTION * min(small.shape[:2])))
            padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            offset = np.float32(pad)
            faces = [
                Face(box=f.box - offset, score=f.score, landmarks=f.landmarks - offset)
                for f in self.detector.detect(padded)
            ]
        if shrink == 1.0:
            return faces
        scale = np.float32(1.0 / shrink)
        return [Face(box=f.box * scale, score=f.score, landmarks=f.landmarks * scale) for f in faces]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity of two unit vectors (the embedder normalises), clipped against float drift."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))
