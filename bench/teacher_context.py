"""Does the student's 112 px crop hold what the dlib teacher uses? Two measurements, no training.

The teacher describes dlib's own 150 px chip (5-point shape, padding 0.25), which frames more of the head
than the student's ArcFace 112 crop. If the teacher leaned on that extra context (hair, ears, jaw line), no
student could match it from its crop, and the student's template would have to change.

1. Context: describe each face from its photo as is, and again with everything outside the student's crop
   square painted grey. Reports the share of the teacher's chip that lies outside the crop and the cosine
   between the two descriptors, raw and centred on the training mean (the distillation target space).
2. Geometry: describe the validation faces from the student's crop itself (resized to 150 px) and compare
   validation TAR@FMR1e-3 / EER with the cached descriptors of dlib's own chips.

    .venv/bin/python bench/teacher_context.py   # ~5 min on 2 cores → reports/teacher_context.{json,md}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from faces.align import estimate_similarity, get_template
from faces.decode import decode_image
from pruning.calibrate import calibrate
from pruning.data.faceset import accepted_records, finished_shards, read_meta
from pruning.data.paths import data_root
from pruning.teacher import DlibTeacher
from pruning.train import DistillationData

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def sample_records(crops_root: Path, sources: list[str], per_source: int) -> list[dict]:
    records = []
    for source in sources:
        folder = crops_root / source
        meta = read_meta(folder)
        rows = accepted_records(folder, finished_shards(folder)[0])
        records += [r | {"photos_root": meta["photos_root"]} for r in rows][:per_source]
    return records


def outside_crop_grey(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo with everything outside the student's 112 px crop grey, and that crop's mask."""
    template = get_template("arcface_112")
    to_photo = cv2.invertAffineTransform(estimate_similarity(landmarks, template))
    width, height = template.size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    polygon = np.round(corners @ to_photo[:, :2].T + to_photo[:, 2]).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, polygon, 255)
    return np.where(mask[..., None] > 0, image, np.uint8(128)), mask


def context_experiment(teacher: DlibTeacher, records: list[dict], mean: np.ndarray) -> dict[str, float]:
    raw, centred, outside = [], [], []
    for record in records:
        image = decode_image(
            (Path(record["photos_root"]) / record["file"]).read_bytes(), max_pixels=40_000_000
        )
        landmarks = np.asarray(record["landmarks"], np.float32).reshape(5, 2)
        masked, mask = outside_crop_grey(image, landmarks)
        chip_mask = teacher.chip(np.repeat(mask[..., None], 3, axis=2), record["box"])
        outside.append(float((chip_mask[..., 0] < 128).mean()))
        full, cut = teacher.describe(image, record["box"]), teacher.describe(masked, record["box"])
        raw.append(float(unit(full) @ unit(cut)))
        centred.append(float(unit(full - mean) @ unit(cut - mean)))
    return {
        "faces": len(records),
        "chip_share_outside_crop": float(np.mean(outside)),
        "cosine_raw_mean": float(np.mean(raw)),
        "cosine_centred_mean": float(np.mean(centred)),
        "cosine_centred_min": float(np.min(centred)),
    }


def geometry_experiment(teacher: DlibTeacher, data: DistillationData) -> dict[str, dict[str, float]]:
    def summary(descriptors: np.ndarray) -> dict[str, float]:
        metrics = calibrate(unit(descriptors - data.target_mean), data.val.identity)
        return {"tar_at_fmr_1e-3": float(metrics["tar_at_fmr_1e-3"]), "eer": float(metrics["eer"])}

    from_crop = np.stack(
        [
            teacher.describe_chip(cv2.resize(crop, (150, 150), interpolation=cv2.INTER_CUBIC))
            for crop in data.val.crops
        ]
    )
    return {"dlib_chip": summary(data.val.teacher), "student_crop": summary(from_crop)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    parser.add_argument("--sources", nargs="+", default=["fairface", "celeba_hq", "utkface"])
    parser.add_argument("--per-source", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPORTS / "teacher_context")
    args = parser.parse_args()

    crops_root = (args.data or data_root()) / "crops"
    data = DistillationData.load(crops_root, teacher="dlib")  # this bench is about the dlib chip
    teacher = DlibTeacher()
    result = {
        "context": context_experiment(
            teacher, sample_records(crops_root, args.sources, args.per_source), data.target_mean
        ),
        "geometry": {"val_faces": len(data.val), **geometry_experiment(teacher, data)},
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    context, geometry = result["context"], result["geometry"]
    lines = [
        "# Does the student's crop hold what the teacher uses?",
        "",
        "`.venv/bin/python bench/teacher_context.py` (see its docstring).",
        "",
        f"**Context** ({context['faces']} training faces): {context['chip_share_outside_crop']:.1%} of the "
        "teacher's 150 px chip lies outside the student's 112 px crop. Painting it grey moves the teacher's "
        f"descriptor to cosine {context['cosine_centred_mean']:.3f} "
        f"(min {context['cosine_centred_min']:.3f}) of the original in the centred target space "
        f"(raw {context['cosine_raw_mean']:.4f}).",
        "",
        f"**Geometry** ({geometry['val_faces']} validation faces, held-out identities):",
        "",
        "| teacher input | val TAR@FMR1e-3 | val EER |",
        "|---|---|---|",
        *(
            f"| {name} | {geometry[key]['tar_at_fmr_1e-3']:.3f} | {geometry[key]['eer']:.2%} |"
            for name, key in (
                ("dlib's own chip", "dlib_chip"),
                ("student's 112 crop, resized", "student_crop"),
            )
        ),
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
