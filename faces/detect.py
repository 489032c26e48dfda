"""MTCNN face detection on ONNX Runtime: image pyramid, NMS, box regression and five landmarks in numpy.

Zhang et al. 2016, https://arxiv.org/abs/1604.02878. The cascade follows facenet-pytorch 2.6.0's
``detect_face`` step by step (same pyramid, thresholds, regressions and NMS order) so that results match
its reference implementation; the parity figures are in ``reports/detector.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

from model_store import ModelStore

_NORM_MEAN = 127.5
_NORM_SCALE = 0.0078125  # 1/128: MTCNN's input normalisation

IntOrArray = int | np.ndarray


@dataclass(frozen=True)
class Face:
    """One detected face in original-image pixel coordinates."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) float32: left eye, right eye, nose, left mouth, right mouth

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return self.width * self.height

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(self.score, 5),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


@dataclass(frozen=True)
class DetectorConfig:
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    scale_factor: float = 0.709
    # Images larger than this (longest side) are shrunk before detection and the results mapped back:
    # the first pyramid level of a 12-megapixel photo alone would cost seconds. None = never shrink.
    max_image_side: int | None = None
    intra_op_threads: int = 1


class AreaSampler:
    """Resizes any rectangle of one image exactly as ``torch.nn.functional.interpolate(mode="area")``.

    That is adaptive average pooling: output cell i averages input rows floor(i*H/h) .. ceil((i+1)*H/h)
    (likewise columns). One integral image (``cv2.integral``) serves every pyramid level and every R/O-Net
    crop, so each resize is four gathers. OpenCV's INTER_AREA is not used because it weights partial pixels
    and up-samples bilinearly, which moved the boxes of small faces against the reference.
    """

    def __init__(self, image: np.ndarray) -> None:
        pixels = np.ascontiguousarray(image)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        # Sums of uint8 pixels are exact in int32 while the whole image sums below 2**31 (8.4 MP of white),
        # and int32 gathers move half the bytes of float64; anything else keeps an exact float64 integral.
        if pixels.dtype == np.uint8 and pixels.size * 255 < 2**31:
            integral = cv2.integral(pixels, sdepth=cv2.CV_32S)
        else:
            integral = cv2.integral(pixels.astype(np.float32), sdepth=cv2.CV_64F)
        self._channels = pixels.shape[2]
        self._dtype = integral.dtype
        self._row_len = integral.shape[1]
        # One opaque element per pixel (all channels' sums, e.g. 12 bytes): a gather then moves a pixel per
        # index instead of a value, so the index arrays are a third the size.
        self._pixels = integral.reshape(-1).view(f"V{integral.itemsize * self._channels}")

    def resize(self, top: int, bottom: int, left: int, right: int, height: int, width: int) -> np.ndarray:
        """Pool image[top:bottom, left:right] to height×width; returns float32 HxWxC."""
        one = [np.array([v]) for v in (top, bottom, left, right)]
        return self.resize_boxes(one[0], one[1], one[2], one[3], height, width)[0]

    def resize_boxes(
        self,
        top: np.ndarray,
        bottom: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        height: int,
        width: int,
    ) -> np.ndarray:
        """Pool N rectangles to height×width each; returns float32 (N, height, width, C) (a view)."""
        return self.pool(top, bottom, left, right, height, width).transpose(0, 2, 3, 1)

    def pool(
        self,
        top: np.ndarray,
        bottom: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        height: int,
        width: int,
    ) -> np.ndarray:
        """Pool N rectangles to height×width each; returns C-contiguous float32 (N, C, height, width).

        One gather per integral-image corner for all N: R-/O-Net see dozens of candidate boxes per photo, and
        a Python loop of small per-box gathers cost nearly as much as the R-/O-Net runs themselves (profiled:
        ~5 ms of a 14 ms detection of a 250×250 photo). With int32 sums, pixel-wide gathers and the
        NCHW float32 output written in one cast: 0.93 → 0.33 ms for a 250×250 photo's 28 R-Net crops.
        """
        rows0, rows1 = _bins(top[:, None], bottom[:, None], height)  # (N, height)
        cols0, cols1 = _bins(left[:, None], right[:, None], width)  # (N, width)
        r0, r1 = (rows0 * self._row_len)[:, :, None], (rows1 * self._row_len)[:, :, None]
        c0, c1 = cols0[:, None, :], cols1[:, None, :]

        def corner(index: np.ndarray) -> np.ndarray:  # (N, h, w) pixel indices → (N, h, w, C) sums
            return self._pixels.take(index).view(self._dtype).reshape(*index.shape, self._channels)

        total = corner(r1 + c1) - corner(r0 + c1) - corner(r1 + c0) + corner(r0 + c0)
        out = np.empty((len(top), self._channels, height, width), np.float32)
        np.copyto(out, total.transpose(0, 3, 1, 2), casting="unsafe")  # NHWC sums → NCHW float32
        area = (rows1 - rows0)[:, None, :, None] * (cols1 - cols0)[:, None, None, :]
        out /= area.astype(np.float32)
        return out


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """MTCNN's input scaling, in place (the pooled array is a fresh float32 buffer)."""
    pixels -= _NORM_MEAN
    pixels *= _NORM_SCALE
    return pixels


def _whole_image(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top, bottom, left, right) of the whole image, as the one-box arrays AreaSampler.pool takes."""
    return np.array([0]), np.array([height]), np.array([0]), np.array([width])


def _bins(start: IntOrArray, stop: IntOrArray, size: int) -> tuple[np.ndarray, np.ndarray]:
    length = stop - start
    idx = np.arange(size)
    return start + (idx * length) // size, start - ((-(idx + 1) * length) // size)  # floor, ceil


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Whole-image convenience form of :class:`AreaSampler`."""
    return AreaSampler(image).resize(0, image.shape[0], 0, image.shape[1], height, width)


def nms_union(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by IoU non-maximum suppression, best score first (OpenCV's implementation)."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]]).astype(np.float64)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(np.float64).tolist(), 0.0, threshold)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """NMS where overlap = intersection / smaller area (MTCNN's final "Min" step).

    Hand-written because neither OpenCV nor torchvision offers this overlap measure; it removes a face box
    nested inside a larger one, which IoU would keep. Pixel-inclusive areas (+1) as in the reference.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    keep: list[int] = []
    while order.size > 0:
        best, rest = order[-1], order[:-1]
        keep.append(int(best))
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = inter_w * inter_h / np.minimum(area[best], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes to squares around their centres (the reference's ``rerec``)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply R/O-Net box offsets, which are relative to pixel-inclusive widths."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return out


def shrink_for_detection(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk so that its longer side is at most ``max_side`` (INTER_AREA), and the factor used.

    Each side keeps at least one pixel: a 3000×1 strip would otherwise round to zero rows and make
    ``cv2.resize`` assert.
    """
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image, 1.0
    shrink = max_side / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), shrink


class MTCNNDetector:
    """Three ONNX Runtime sessions plus the cascade logic. Thread-safe: ORT sessions allow concurrent runs."""

    def __init__(self, onnx_models: dict[str, bytes], config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads
        options.inter_op_num_threads = 1
        self._sessions = {
            role: ort.InferenceSession(onnx_models[role], options, providers=["CPUExecutionProvider"])
            for role in ("pnet", "rnet", "onet")
        }

    @classmethod
    def from_store(
        cls, store: ModelStore, ref: str = "mtcnn", config: DetectorConfig | None = None
    ) -> MTCNNDetector:
        models = {role: store.load(ref, role)[1] for role in ("pnet", "rnet", "onet")}
        return cls(models, config)

    # ---- the cascade -------------------------------------------------------------------------------
    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image, largest first."""
        image_rgb, shrink = shrink_for_detection(image_rgb, self.config.max_image_side)
        shape = (image_rgb.shape[0], image_rgb.shape[1])
        sampler = AreaSampler(image_rgb)

        boxes = self._propose(sampler, *shape)
        if len(boxes):
            boxes = self._refine(sampler, shape, boxes)
        if not len(boxes):
            return []
        boxes, points = self._output(sampler, shape, boxes)
        if shrink != 1.0:
            boxes[:, :4] /= shrink
            points /= shrink
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
        return [
            Face(box=boxes[i, :4].astype(np.float32), score=float(boxes[i, 4]), landmarks=points[i])
            for i in order
        ]

    def _scales(self, height: int, width: int) -> list[float]:
        scale = 12.0 / self.config.min_face_size
        min_side = min(height, width) * scale
        scales = []
        while min_side >= 12:
            scales.append(scale)
            scale *= self.config.scale_factor
            min_side *= self.config.scale_factor
        return scales

    def _propose(self, sampler: AreaSampler, height: int, width: int) -> np.ndarray:
        """Stage 1, P-Net over the pyramid → candidate boxes (N, 5) after regression, squared."""
        candidates = []
        for scale in self._scales(height, width):
            size = (int(height * scale + 1), int(width * scale + 1))
            batch = _normalise(sampler.pool(*_whole_image(height, width), size[0], size[1]))
            reg, prob = self._sessions["pnet"].run(None, {"input": batch})
            rows, cols = np.nonzero(prob[0, 1] >= self.config.thresholds[0])
            if rows.size == 0:
                continue
            cells = np.stack([cols, rows], axis=1).astype(np.float32)
            q1 = np.floor((2 * cells + 1) / scale)
            q2 = np.floor((2 * cells + 12) / scale)
            found = np.column_stack([q1, q2, prob[0, 1, rows, cols], reg[0, :, rows, cols]])
            candidates.append(found[nms_union(found[:, :4], found[:, 4], 0.5)])
        if not candidates:
            return np.empty((0, 5), np.float32)
        boxes = np.concatenate(candidates)
        boxes = boxes[nms_union(boxes[:, :4], boxes[:, 4], 0.7)]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        regressed = boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
        return _square(np.column_stack([regressed, boxes[:, 4]]).astype(np.float32))

    def _crops(
        self, sampler: AreaSampler, shape: tuple[int, int], boxes: np.ndarray, side: int
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """Crops of the (clipped) boxes resized to side×side and normalised; mask of boxes not empty."""
        height, width = shape
        ints = np.trunc(boxes[:, :4]).astype(np.int64)
        x = np.maximum(ints[:, 0], 1)
        y = np.maximum(ints[:, 1], 1)
        ex = np.minimum(ints[:, 2], width)
        ey = np.minimum(ints[:, 3], height)
        valid = (ey > y - 1) & (ex > x - 1)
        if not valid.any():
            return None, valid
        crops = sampler.pool(y[valid] - 1, ey[valid], x[valid] - 1, ex[valid], side, side)
        return _normalise(crops), valid

    def _refine(self, sampler: AreaSampler, shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
        """Stage 2, R-Net on 24×24 crops → rejected false positives, regressed and squared boxes."""
        batch, valid = self._crops(sampler, shape, boxes, 24)
        boxes = boxes[valid]
        if batch is None:
            return boxes
        reg, prob = self._sessions["rnet"].run(None, {"input": batch})
        keep = prob[:, 1] > self.config.thresholds[1]
        boxes = np.column_stack([boxes[keep, :4], prob[keep, 1]])
        reg = reg[keep]
        pick = nms_union(boxes[:, :4], boxes[:, 4], 0.7)
        return _square(_regress(boxes[pick], reg[pick]))

    def _output(
        self, sampler: AreaSampler, shape: tuple[int, int], boxes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage 3, O-Net on 48×48 crops → final boxes (N, 5) and landmarks (N, 5, 2)."""
        batch, valid = self._crops(sampler, shape, boxes, 48)
        boxes = boxes[valid]
        if batch is None:
            return np.empty((0, 5), np.float32), np.empty((0, 5, 2), np.float32)
        reg, marks, prob = self._sessions["onet"].run(None, {"input": batch})
        keep = prob[:, 1] > self.config.thresholds[2]
        boxes = np.column_stack([boxes[keep, :4], prob[keep, 1]])
        reg, marks = reg[keep], marks[keep]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        xs = w[:, None] * marks[:, :5] + boxes[:, 0:1] - 1
        ys = h[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = np.stack([xs, ys], axis=2).astype(np.float32)
        boxes = _regress(boxes, reg)
        pick = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
        return boxes[pick], points[pick]


__all__ = [
    "AreaSampler",
    "DetectorConfig",
    "Face",
    "MTCNNDetector",
    "area_resize",
    "nms_min",
    "nms_union",
    "shrink_for_detection",
]
