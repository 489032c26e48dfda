"""Detector parity and latency: our ONNX Runtime MTCNN against facenet-pytorch's own MTCNN.

Run:  .venv/bin/python bench/detector.py --n 300
Writes reports/detector.json and reports/detector.md. Both detectors use the same thresholds
(0.6, 0.7, 0.7), scale factor 0.709 and minimum face size 20, and one CPU thread each.

Parity criteria (issue 2): same number of faces per image; matched boxes IoU >= 0.95 and all five landmarks
within 2 px, for >= 98 % of faces.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from faces.decode import decode_image
from faces.detect import DetectorConfig, MTCNNDetector
from model_store import ModelStore

ROOT = Path(__file__).resolve().parents[1]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def reference_detect(mtcnn, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, probs, points = mtcnn.detect(Image.fromarray(image), landmarks=True)
    if boxes is None:
        return np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2))
    # facenet-pytorch returns object arrays under numpy 2: cast before arithmetic
    return boxes.astype(np.float64), np.asarray(probs, np.float64), points.astype(np.float64)


def compare(ours, ref_boxes, ref_points) -> list[dict[str, float]]:
    """Greedy best-IoU matching of reference faces to ours."""
    matches = []
    used: set[int] = set()
    for box, pts in zip(ref_boxes, ref_points, strict=True):
        best, best_iou = None, -1.0
        for j, face in enumerate(ours):
            if j in used:
                continue
            value = iou(box, face.box)
            if value > best_iou:
                best, best_iou = j, value
        if best is None:
            matches.append({"iou": 0.0, "landmark_err": float("inf")})
            continue
        used.add(best)
        err = float(np.linalg.norm(ours[best].landmarks - pts, axis=1).max())
        matches.append({"iou": best_iou, "landmark_err": err})
    return matches


def pick_images(lfw_root: Path, n: int, seed: int) -> list[Path]:
    paths = sorted(lfw_root.glob("*/*.jpg"))
    return sorted(random.Random(seed).sample(paths, n))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared/datasets/lfw/images")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--golden", type=Path, help="also write the reference detections here (test data)")
    args = parser.parse_args()

    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    reference = MTCNN(keep_all=True, device="cpu")  # defaults: min 20, (0.6, 0.7, 0.7), 0.709
    store = ModelStore()
    ours = MTCNNDetector.from_store(store, "mtcnn", DetectorConfig(intra_op_threads=1))

    images = pick_images(args.lfw, args.n, args.seed)
    loadavg = [round(x, 2) for x in os.getloadavg()]
    decoded = [decode_image(p.read_bytes(), max_pixels=50_000_000) for p in images]
    for img in decoded[:3]:  # warm-up both
        ours.detect(img)
        reference_detect(reference, img)

    t_ours, t_ref, matches, count_mismatch, golden = [], [], [], [], {}
    for path, img in zip(images, decoded, strict=True):
        start = time.perf_counter()
        faces = ours.detect(img)
        t_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref_boxes, ref_probs, ref_points = reference_detect(reference, img)
        t_ref.append(time.perf_counter() - start)
        if len(faces) != len(ref_boxes):
            count_mismatch.append({"image": path.name, "ours": len(faces), "reference": len(ref_boxes)})
        matches.extend(compare(faces, ref_boxes, ref_points))
        golden[f"{path.parent.name}/{path.name}"] = {
            "boxes": ref_boxes.round(3).tolist(),
            "scores": ref_probs.round(6).tolist(),
            "landmarks": ref_points.round(3).tolist(),
        }

    ious = [m["iou"] for m in matches]
    errs = [m["landmark_err"] for m in matches]
    good = [m["iou"] >= 0.95 and m["landmark_err"] <= 2.0 for m in matches]
    result = {
        "images": len(images),
        "reference_faces": len(matches),
        "images_with_count_mismatch": len(count_mismatch),
        "count_mismatches": count_mismatch,
        "faces_within_tolerance": int(sum(good)),
        "share_within_tolerance": sum(good) / max(1, len(good)),
        "iou_min": min(ious, default=0.0),
        "iou_median": statistics.median(ious) if ious else 0.0,
        "landmark_err_max_px": max(errs, default=0.0),
        "landmark_err_median_px": statistics.median(errs) if errs else 0.0,
        "latency_ms": {
            "ours_onnxruntime": {
                "median": 1e3 * statistics.median(t_ours),
                "p95": 1e3 * percentile(t_ours, 95),
            },
            "facenet_pytorch": {"median": 1e3 * statistics.median(t_ref), "p95": 1e3 * percentile(t_ref, 95)},
        },
        "threads": 1,
        "detector": str(store.resolve("mtcnn")),
        "image_size": "250x250 (LFW deep-funneled)",
        "command": f"python bench/detector.py --n {args.n} --seed {args.seed}",
        "loadavg_before": loadavg,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detector.json").write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    (args.out / "detector.md").write_text(
        "# MTCNN detector: ONNX Runtime port vs facenet-pytorch\n\n"
        f"`{result['command']}` — {result['detector']} on {len(images)} random LFW images "
        f"(seed {args.seed}), 1 CPU thread each, the two detectors interleaved per image; load average "
        f"{loadavg} before, {result['loadavg_after']} after (2 cores shared with other jobs: the latencies "
        "are comparable with each other, not with other runs).\n\n"
        "| figure | value |\n|---|---|\n"
        f"| reference faces | {len(matches)} |\n"
        f"| images with a different face count | {len(count_mismatch)} |\n"
        f"| faces with IoU ≥ 0.95 and landmarks ≤ 2 px | {sum(good)} "
        f"({100 * result['share_within_tolerance']:.2f} %) |\n"
        f"| box IoU min / median | {result['iou_min']:.4f} / {result['iou_median']:.4f} |\n"
        f"| landmark error max / median (px) | {result['landmark_err_max_px']:.3f} / "
        f"{result['landmark_err_median_px']:.4f} |\n"
        f"| latency ours (ORT) median / p95 | {lat['ours_onnxruntime']['median']:.1f} ms / "
        f"{lat['ours_onnxruntime']['p95']:.1f} ms |\n"
        f"| latency facenet-pytorch median / p95 | {lat['facenet_pytorch']['median']:.1f} ms / "
        f"{lat['facenet_pytorch']['p95']:.1f} ms |\n"
    )
    if args.golden:
        args.golden.write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "count_mismatches"}, indent=2))


if __name__ == "__main__":
    main()
