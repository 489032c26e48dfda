"""The ONNX Runtime MTCNN against facenet-pytorch's own MTCNN, on real photos.

The full figure over 300 LFW images is produced by ``bench/detector.py`` (reports/detector.md);
this is the same comparison on the photos kept in tests/data.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from faces.detect import AreaSampler, MTCNNDetector, area_resize, nms_min, nms_union
from tests.conftest import DATA, LFW_SAMPLES, load_rgb

PHOTOS = [*LFW_SAMPLES, DATA / "bbt3.jpg", DATA / "selfie-many-people.jpg"]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def reference():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


@pytest.mark.parametrize("path", PHOTOS, ids=lambda p: p.name)
def test_parity_with_facenet_pytorch(path, detector: MTCNNDetector, reference) -> None:
    from PIL import Image

    image = load_rgb(path)
    ours = detector.detect(image)
    boxes, _, points = reference.detect(Image.fromarray(image), landmarks=True)
    boxes = np.zeros((0, 4)) if boxes is None else boxes.astype(np.float64)
    points = np.zeros((0, 5, 2)) if points is None else points.astype(np.float64)
    assert len(ours) == len(boxes)
    assert len(ours) >= 1
    # both return the largest face first
    for face, box, pts in zip(ours, boxes, points, strict=True):
        assert _iou(face.box, box) >= 0.95
        assert np.abs(face.landmarks - pts).max() <= 2.0


def test_group_photo_finds_every_face(detector: MTCNNDetector) -> None:
    faces = detector.detect(load_rgb(DATA / "selfie-many-people.jpg"))
    assert len(faces) >= 3
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    for face in faces:
        assert face.score >= 0.7
        x1, _, x2, _ = face.box
        # landmarks sit inside (or within a few px of) their box, eyes above mouth
        assert np.all(face.landmarks[:, 0] > x1 - 5) and np.all(face.landmarks[:, 0] < x2 + 5)
        assert face.landmarks[0, 1] < face.landmarks[3, 1] and face.landmarks[1, 1] < face.landmarks[4, 1]


def test_photo_without_a_face(detector: MTCNNDetector) -> None:
    image = load_rgb(DATA / "lfw" / LFW_SAMPLES[0].name)
    # a flat grey card with a smooth gradient: nothing face-like
    blank = np.tile(
        np.linspace(60, 200, image.shape[1], dtype=np.uint8)[None, :, None], (image.shape[0], 1, 3)
    )
    assert detector.detect(blank) == []


def test_large_images_are_shrunk_and_mapped_back(store) -> None:
    from faces.detect import DetectorConfig

    image = load_rgb(LFW_SAMPLES[1])
    big = np.repeat(np.repeat(image, 4, axis=0), 4, axis=1)  # 1000×1000
    capped = MTCNNDetector.from_store(store, config=DetectorConfig(max_image_side=250))
    small_faces = MTCNNDetector.from_store(store).detect(image)
    big_faces = capped.detect(big)
    assert len(big_faces) == len(small_faces) >= 1
    assert np.allclose(big_faces[0].box, small_faces[0].box * 4, atol=4 * 2.0)


@pytest.mark.parametrize(
    ("src", "dst"), [((250, 250), (151, 151)), ((13, 17), (24, 24)), ((250, 250), (9, 9))]
)
def test_area_resize_matches_torch(src, dst) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None], size=dst, mode="area"
    )[0].permute(1, 2, 0)
    assert np.abs(area_resize(image, *dst) - ref.numpy()).max() < 1e-3
    crop = AreaSampler(image).resize(2, src[0] - 1, 3, src[1] - 2, *dst)
    ref_crop = torch.nn.functional.interpolate(
        torch.from_numpy(image[2 : src[0] - 1, 3 : src[1] - 2].astype(np.float32)).permute(2, 0, 1)[None],
        size=dst,
        mode="area",
    )[0].permute(1, 2, 0)
    assert np.abs(crop - ref_crop.numpy()).max() < 1e-3


def test_batched_box_resize_equals_one_by_one() -> None:
    rng = np.random.default_rng(1)
    sampler = AreaSampler(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8))
    top, bottom = np.array([0, 5, 40, 88]), np.array([30, 80, 41, 90])
    left, right = np.array([0, 3, 10, 0]), np.array([24, 70, 60, 1])  # square, tall, one row, one pixel
    batched = sampler.resize_boxes(top, bottom, left, right, 24, 24)
    for k in range(len(top)):
        single = sampler.resize(int(top[k]), int(bottom[k]), int(left[k]), int(right[k]), 24, 24)
        assert np.array_equal(batched[k], single)


@pytest.mark.parametrize("role", ["pnet", "rnet", "onet"])
def test_ort_friendly_rewrite_is_the_same_network(role: str) -> None:
    from facenet_pytorch import ONet, PNet, RNet

    from pruning.mtcnn_export import DepthwisePReLU, ReluFormPReLU, ort_friendly

    reference = {"pnet": PNet, "rnet": RNet, "onet": ONet}[role]().eval()
    rewritten = ort_friendly(reference, role)
    assert not any(isinstance(m, torch.nn.PReLU) for m in rewritten.modules())
    # maps get the depthwise form, the dense layers' vectors the two-ReLU form
    forms = [type(m) for m in rewritten.modules() if isinstance(m, DepthwisePReLU | ReluFormPReLU)]
    dense = {"pnet": 0, "rnet": 1, "onet": 1}[role]
    assert forms.count(ReluFormPReLU) == dense and forms.count(DepthwisePReLU) == len(forms) - dense >= 3
    if role == "rnet":
        assert rewritten.conv1.out_channels == 32 and reference.conv1.out_channels == 28
    side = {"pnet": 37, "rnet": 24, "onet": 48}[role]
    x = torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x[0, :, :4] = -1.0  # a flat black band: PReLU's negative side on every channel
    with torch.no_grad():
        for a, b in zip(reference(x), rewritten(x), strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_nms_modes() -> None:
    outer = [0, 0, 100, 100]
    inner = [10, 10, 50, 50]  # IoU 0.16, but entirely inside: "Min" overlap 1.0
    far = [200, 200, 240, 240]
    boxes = np.array([outer, inner, far], dtype=np.float32)
    scores = np.array([0.9, 0.95, 0.8], dtype=np.float32)
    assert sorted(nms_union(boxes, scores, 0.5).tolist()) == [0, 1, 2]
    assert sorted(nms_min(boxes, scores, 0.7).tolist()) == [1, 2]


def test_serving_path_imports_no_torch() -> None:
    code = (
        "import sys; import model_store, faces.decode, faces.detect, faces.align;"
        "from model_store import ModelStore; from faces.detect import MTCNNDetector;"
        "MTCNNDetector.from_store(ModelStore());"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
