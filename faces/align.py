"""5-point similarity alignment of faces onto a named template.

Model manifests record the template *name*, and training crops and serving crops are both produced by
:func:`align_face`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner, where
# "left" means as seen in the image (smaller x). This is the order MTCNN returns.
ARCFACE_112: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

# Spread (RMS distance from the centroid, in pixels) below which landmarks cannot define a face: OpenCV
# happily returns an astronomically scaled transform for e.g. four identical points plus one nudged by 1e-7.
_MIN_LANDMARK_SPREAD_PX = 1.0

# Larger than any image coordinate, so RANSAC counts every point as an inlier and its final
# Levenberg-Marquardt refinement becomes the least-squares similarity over all five points. (LMEDS would
# instead drop the worst points as outliers; tests compare against the closed-form Umeyama solution.)
_ALL_INLIERS_THRESHOLD_PX = 1e6


class UnknownTemplateError(KeyError):
    """No alignment template of that name (a model manifest names one this build does not know)."""

    def __str__(self) -> str:
        # KeyError's default str() wraps the message in quotes.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, eq=False)
class AlignmentTemplate:
    name: str
    size: tuple[int, int]  # (width, height) of the aligned crop, as cv2.warpAffine's dsize
    points: np.ndarray  # (5, 2) float64 target landmark positions, read-only

    def __post_init__(self) -> None:
        pts = np.array(self.points, dtype=np.float64)
        if pts.shape != (5, 2):
            raise ValueError(f"template {self.name!r} needs 5 (x, y) points, got shape {pts.shape}")
        pts.setflags(write=False)  # templates are shared module state
        object.__setattr__(self, "points", pts)


TEMPLATES: dict[str, AlignmentTemplate] = {
    "arcface_112": AlignmentTemplate(name="arcface_112", size=(112, 112), points=np.array(ARCFACE_112)),
}


def get_template(name: str) -> AlignmentTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise UnknownTemplateError(f"unknown alignment template {name!r}; known: {known}") from None


def estimate_similarity(landmarks: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping landmarks onto the template.

    Returns the 2x3 float64 matrix for ``cv2.warpAffine``. Raises ``ValueError`` for landmarks of the wrong
    shape, non-finite values or degenerate (coincident) points.
    """
    src = np.asarray(landmarks, dtype=np.float64)
    if src.shape != template.points.shape:
        raise ValueError(f"landmarks must have shape {template.points.shape}, got {src.shape}")
    if not np.isfinite(src).all():
        raise ValueError("landmarks contain non-finite values")
    spread = float(np.sqrt(((src - src.mean(axis=0)) ** 2).sum(axis=1).mean()))
    if spread < _MIN_LANDMARK_SPREAD_PX:
        raise ValueError("landmarks are degenerate (all at nearly the same point)")
    matrix, _ = cv2.estimateAffinePartial2D(
        src,
        template.points,
        method=cv2.RANSAC,
        ransacReprojThreshold=_ALL_INLIERS_THRESHOLD_PX,
        refineIters=100,  # the LS problem is linear in the 4 parameters: LM converges in a few steps
    )
    if matrix is None or not np.isfinite(matrix).all():
        raise ValueError("could not estimate a similarity transform from these landmarks")
    return matrix


def align_face(
    image_rgb: np.ndarray, landmarks: np.ndarray, template_name: str = "arcface_112"
) -> np.ndarray:
    """Warp one face onto the named template: returns a template-sized HxWx3 uint8 RGB crop."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image_rgb.shape} {image_rgb.dtype}")
    template = get_template(template_name)
    matrix = estimate_similarity(landmarks, template)
    # BORDER_REPLICATE: tight training photos (FairFace, UTKFace) leave part of the template outside the
    # photo, whereas LFW has real background there. Replicating the edge fills that area with plausible
    # colour instead of black bars, so both kinds of crop look alike; training and serving share this.
    aligned = cv2.warpAffine(
        image_rgb,
        matrix,
        template.size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.ascontiguousarray(aligned)


def align_faces(
    image_rgb: np.ndarray, landmarks_list: Sequence[np.ndarray], template_name: str = "arcface_112"
) -> np.ndarray:
    """Align several faces of one image; returns an (N, H, W, 3) uint8 batch (N may be 0)."""
    width, height = get_template(template_name).size
    crops = [align_face(image_rgb, lm, template_name) for lm in landmarks_list]
    if not crops:
        return np.empty((0, height, width, 3), dtype=np.uint8)
    return np.stack(crops)
