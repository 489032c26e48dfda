"""Which detected face a photo is about, and whether it is good enough to embed (``PreprocessSpec``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from faces.detect import Face
from model_store import PreprocessSpec

Rejection = Literal["no_face", "low_score", "bad_landmarks", "too_small"]

# |yaw_proxy| bands: under FRONTAL_YAW a face looks at the camera, over SIDE_YAW it is a side view
# (about a third of the way to profile); reports/pose_pairs.md pairs the two bands.
FRONTAL_YAW, SIDE_YAW = 0.08, 0.25


def select_face(
    faces: Sequence[Face], height: int, width: int, spec: PreprocessSpec, box: np.ndarray | None = None
) -> Face | None:
    """``largest`` is the service's rule (the detector returns faces largest first). ``centre`` suits
    benchmarks whose photos are centred on the labelled person; ``box`` takes the face overlapping a known
    box most (a labelled dataset's own annotation)."""
    if not faces:
        return None
    if spec.selection == "largest":
        return faces[0]
    if spec.selection == "box":
        if box is None:
            raise ValueError("face selection 'box' needs a box")
        return max(faces, key=lambda f: _iou(f.box, box))
    centre = np.array([width / 2, height / 2])
    return min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = w * h
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def implausible_landmarks(box: np.ndarray, landmarks: np.ndarray) -> str | None:
    """Reason to distrust a detection's landmarks (close-ups and partial faces), or None.

    The alignment trusts the five points completely, so a face whose points are in an impossible layout
    would become a garbage crop.
    """
    (lex, ley), (rex, rey), (_, ny), (lmx, lmy), (rmx, rmy) = landmarks
    width = box[2] - box[0]
    if not (lex < rex and lmx < rmx):
        return "left/right swapped"
    if not (max(ley, rey) < ny < min(lmy, rmy)):
        return "eyes, nose, mouth out of vertical order"
    if rex - lex < 0.2 * width:
        return "eyes too close for the box"
    margin = 0.15 * width
    if np.any(landmarks[:, 0] < box[0] - margin) or np.any(landmarks[:, 0] > box[2] + margin):
        return "landmarks outside the box"
    return None


def yaw_proxy(landmarks: np.ndarray) -> float:
    """Nose offset from the eye/mouth mid-line, in inter-ocular distances (0 frontal, ±0.5 strong profile).

    Five landmarks carry no depth, so this is a proxy, not an angle; it ranks faces by how far they turn.
    """
    left_eye, right_eye, nose, left_mouth, right_mouth = np.asarray(landmarks, np.float64).reshape(5, 2)
    middle = (left_eye + right_eye + left_mouth + right_mouth)[0] / 4
    return float((nose[0] - middle) / max(1e-6, float(np.linalg.norm(right_eye - left_eye))))


def gate(face: Face, spec: PreprocessSpec) -> tuple[Rejection, str] | None:
    """The first quality gate ``face`` fails, with a reason, or None."""
    if face.score < spec.min_score:
        return "low_score", f"detection score {face.score:.3f} < {spec.min_score}"
    if spec.check_landmarks:
        reason = implausible_landmarks(face.box, face.landmarks)
        if reason:
            return "bad_landmarks", reason
    if min(face.width, face.height) < spec.min_face_px:
        return "too_small", f"shorter box side below {spec.min_face_px} px"
    return None
