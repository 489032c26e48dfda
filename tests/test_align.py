"""5-point similarity alignment: exactness on known transforms, least-squares optimality, failure modes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faces import align
from faces.align import (
    ARCFACE_112,
    TEMPLATES,
    AlignmentTemplate,
    UnknownTemplateError,
    align_face,
    align_faces,
    estimate_similarity,
    get_template,
)

DATA = Path(__file__).parent / "data"
TEMPLATE = get_template("arcface_112")


@pytest.fixture(scope="module")
def face_112() -> np.ndarray:
    """A real face (bbt crop) resized to the template size, as RGB."""
    with Image.open(DATA / "penny1.png") as img:
        return np.array(img.convert("RGB").resize((112, 112), Image.Resampling.LANCZOS))


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Closed-form least-squares similarity (Umeyama 1991), written out independently of OpenCV."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / (src_c**2).sum(axis=1).mean()
    out = np.zeros((2, 3))
    out[:, :2] = scale * rot
    out[:, 2] = dst_mean - scale * rot @ src_mean
    return out


# --- registry ---------------------------------------------------------------------------------------------


def test_arcface_template_registered() -> None:
    template = TEMPLATES["arcface_112"]
    assert template is TEMPLATE
    assert template.name == "arcface_112"
    assert template.size == (112, 112)
    np.testing.assert_array_equal(template.points, np.array(ARCFACE_112))
    # left/right as seen in the image: left eye and left mouth corner have the smaller x
    assert template.points[0, 0] < template.points[1, 0]
    assert template.points[3, 0] < template.points[4, 0]
    with pytest.raises(ValueError):
        template.points[0, 0] = 0.0  # shared module state must not be mutable


def test_unknown_template_name_fails_clearly(face_112: np.ndarray) -> None:
    with pytest.raises(KeyError) as exc:
        get_template("arcface_96")
    assert isinstance(exc.value, UnknownTemplateError)
    assert "arcface_96" in str(exc.value) and "arcface_112" in str(exc.value)
    with pytest.raises(UnknownTemplateError):
        align_face(face_112, TEMPLATE.points, template_name="nope")


def test_template_shape_is_validated() -> None:
    with pytest.raises(ValueError):
        AlignmentTemplate(name="bad", size=(112, 112), points=np.zeros((4, 2)))


# --- estimation -------------------------------------------------------------------------------------------

TRANSFORMS = [
    (0.0, 1.0, 0.0, 0.0),
    (17.0, 1.7, 120.0, 45.0),
    (-35.0, 0.6, -20.0, 300.0),
    (90.0, 3.2, 500.0, 10.0),
]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_known_similarity_is_recovered(transform: tuple[float, float, float, float]) -> None:
    to_image = similarity(*transform)  # template coords → image coords
    landmarks = apply(to_image, TEMPLATE.points)
    matrix = estimate_similarity(landmarks, TEMPLATE)
    assert matrix.shape == (2, 3)
    # LM refinement stops at its own tolerance, so "exact" means well below a thousandth of a pixel
    np.testing.assert_allclose(matrix[:, :2], invert(to_image)[:, :2], atol=1e-6)
    np.testing.assert_allclose(matrix, invert(to_image), atol=1e-3)
    np.testing.assert_allclose(apply(matrix, landmarks), TEMPLATE.points, atol=1e-3)


@pytest.mark.parametrize("seed", range(8))
def test_estimate_is_the_least_squares_similarity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    to_image = similarity(rng.uniform(-60, 60), rng.uniform(0.3, 5), *rng.uniform(-100, 800, 2))
    # Noisy detector output, including one badly placed point: the fit must still use all five equally.
    landmarks = apply(to_image, TEMPLATE.points) + rng.normal(0, rng.uniform(0.5, 8), (5, 2))
    landmarks[rng.integers(5)] += rng.uniform(-40, 40, 2)

    ours = estimate_similarity(landmarks, TEMPLATE)
    best = umeyama(landmarks, TEMPLATE.points)
    assert np.abs(apply(ours, landmarks) - apply(best, landmarks)).max() < 1e-3
    # it is a similarity: [[a, -b], [b, a]] with positive determinant (no reflection)
    assert ours[0, 0] == pytest.approx(ours[1, 1]) and ours[0, 1] == pytest.approx(-ours[1, 0])
    assert np.linalg.det(ours[:, :2]) > 0

    def cost(m: np.ndarray) -> float:
        return float(((apply(m, landmarks) - TEMPLATE.points) ** 2).sum())

    assert cost(ours) <= cost(best) + 1e-6


@pytest.mark.parametrize(
    "landmarks",
    [
        np.full((5, 2), 50.0),
        np.array([[10.0, 10.0]] * 4 + [[10.0, 10.0000001]]),
        # OpenCV returns a finite but absurd (scale ~2500) transform here: only our spread check stops it
        np.array([[10.0, 10.0]] * 4 + [[10.0, 10.01]]),
        np.full((5, 2), np.nan),
        np.array(ARCFACE_112[:4]),
        np.array(ARCFACE_112).ravel(),
    ],
    ids=["all-equal", "nearly-equal", "almost-equal", "nan", "four-points", "flat"],
)
def test_degenerate_or_malformed_landmarks_raise(landmarks: np.ndarray) -> None:
    with pytest.raises(ValueError):
        estimate_similarity(landmarks, TEMPLATE)


def test_opencv_failure_raises_value_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(align.cv2, "estimateAffinePartial2D", lambda *args, **kwargs: (None, None))
    with pytest.raises(ValueError):
        estimate_similarity(TEMPLATE.points, TEMPLATE)


# --- warping ----------------------------------------------------------------------------------------------


def test_identity_landmarks_return_the_image_unchanged(face_112: np.ndarray) -> None:
    out = align_face(face_112, TEMPLATE.points)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, face_112)


@pytest.mark.parametrize("transform", TRANSFORMS[1:3])
def test_alignment_undoes_a_known_warp_of_a_real_face(
    face_112: np.ndarray, transform: tuple[float, float, float, float]
) -> None:
    to_image = similarity(*transform)
    scene = cv2.warpAffine(
        face_112, to_image, (640, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    landmarks = apply(to_image, TEMPLATE.points)

    out = align_face(scene, landmarks)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    # two bilinear resamplings blur a little; the interior must match closely
    inner = (slice(8, -8), slice(8, -8))
    diff = np.abs(out[inner].astype(int) - face_112[inner].astype(int)).mean()
    assert diff < 6, diff
    # and it is not trivially close: the unaligned scene crop differs a lot
    assert np.abs(scene[:112, :112][inner].astype(int) - face_112[inner].astype(int)).mean() > 20


def test_area_outside_the_photo_replicates_the_edge() -> None:
    # A small photo whose face fills it: the template reaches past every edge.
    colour = np.array([200, 120, 40], dtype=np.uint8)
    photo = np.broadcast_to(colour, (40, 40, 3)).copy()
    landmarks = apply(similarity(0, 0.3, 3, 3), TEMPLATE.points)  # template spans ~34 px from (3, 3)
    out = align_face(photo, landmarks)
    assert (out == colour).all()  # no black bars anywhere


def test_image_must_be_hxwx3_uint8(face_112: np.ndarray) -> None:
    for bad in (face_112.astype(np.float32), face_112[..., 0], np.dstack([face_112, face_112[..., :1]])):
        with pytest.raises(ValueError):
            align_face(bad, TEMPLATE.points)


def test_align_faces_batches(face_112: np.ndarray) -> None:
    scene = cv2.resize(face_112, (224, 224))
    first = apply(similarity(0, 2, 0, 0), TEMPLATE.points)
    second = apply(similarity(10, 1, 60, 50), TEMPLATE.points)
    batch = align_faces(scene, [first, second])
    assert batch.shape == (2, 112, 112, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], align_face(scene, first))
    np.testing.assert_array_equal(batch[1], align_face(scene, second))
    assert align_faces(scene, []).shape == (0, 112, 112, 3)
