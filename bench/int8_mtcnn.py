"""Does int8 pay for the MTCNN detector? Quantise P-, R- and O-Net like the embedders and time ``detect``.

Run:  bash -c 'bg-pause; trap bg-resume EXIT; .venv/bin/python bench/int8_mtcnn.py'  → reports/int8_mtcnn.json
Calibration: the nets' real inputs, recorded while the float cascade runs on the test photos
(tests/data/e2e, not LFW). Timing and agreement: ``--n`` LFW photos (benchmark only), 1 thread, the float
and int8 detectors interleaved photo by photo. Nothing is published: this only answers whether it pays.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from faces.decode import decode_image
from faces.detect import DetectorConfig, MTCNNDetector
from model_store import DEFAULT_ROOT, ModelStore

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared/datasets/lfw/images"
ROLES = ("pnet", "rnet", "onet")


class _Recorder:
    """Wraps a session's ``run`` and keeps its inputs (calibration data of the real cascade)."""

    def __init__(self, session: ort.InferenceSession, sink: list[dict[str, np.ndarray]]) -> None:
        self._session, self._sink = session, sink

    def run(self, outputs, feeds, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._sink.append({k: np.array(v) for k, v in feeds.items()})
        return self._session.run(outputs, feeds, *args, **kwargs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._session, name)


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--out", type=Path, default=ROOT / "reports/int8_mtcnn.json")
    args = parser.parse_args()
    store = ModelStore(DEFAULT_ROOT)
    ref = str(store.resolve("mtcnn"))
    float_bytes = {role: store.load(ref, role)[1] for role in ROLES}
    config = DetectorConfig(intra_op_threads=1)

    recorded: dict[str, list[dict[str, np.ndarray]]] = {role: [] for role in ROLES}
    recorder = MTCNNDetector(float_bytes, config)
    recorder._sessions = {r: _Recorder(s, recorded[r]) for r, s in recorder._sessions.items()}  # type: ignore[assignment]
    for path in sorted((ROOT / "tests/data/e2e").rglob("*")):
        if path.suffix.lower() in {".jpg", ".png"}:
            recorder.detect(decode_image(path.read_bytes(), max_pixels=50_000_000))

    int8_bytes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for role in ROLES:
            src, pre, out = (Path(tmp) / f"{role}{s}.onnx" for s in ("", "-pre", "-int8"))
            src.write_bytes(float_bytes[role])
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(out), _Feeds(recorded[role]), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )  # fmt: skip
            int8_bytes[role] = out.read_bytes()
    detectors = {"float": MTCNNDetector(float_bytes, config), "int8": MTCNNDetector(int8_bytes, config)}

    rng = np.random.default_rng(0)
    photos = sorted(LFW.rglob("*.jpg"))
    chosen = [photos[i] for i in rng.choice(len(photos), args.n, replace=False)]
    times: dict[str, list[float]] = {k: [] for k in detectors}
    same_count, ious = 0, []
    for path in chosen:
        image = decode_image(path.read_bytes(), max_pixels=50_000_000)
        found = {}
        for kind, detector in detectors.items():
            detector.detect(image)  # warm (first call per shape allocates)
            start = time.perf_counter()
            found[kind] = detector.detect(image)
            times[kind].append(time.perf_counter() - start)
        same_count += len(found["float"]) == len(found["int8"])
        for face in found["float"]:
            ious.append(max((iou(face.box, other.box) for other in found["int8"]), default=0.0))
    report = {
        "command": "bash -c 'bg-pause; trap bg-resume EXIT; .venv/bin/python bench/int8_mtcnn.py'",
        "detector": ref,
        "onnxruntime": ort.__version__,
        "photos": args.n,
        "calibration_inputs": {role: len(v) for role, v in recorded.items()},
        "p50_ms": {k: 1000 * float(np.median(v)) for k, v in times.items()},
        "speedup": float(np.median(times["float"]) / np.median(times["int8"])),
        "same_face_count_share": same_count / args.n,
        "box_iou_min": float(min(ious)) if ious else None,
        "box_iou_median": float(np.median(ious)) if ious else None,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
