"""Would an SFace + dlib ensemble be a better target than SFace alone? Measured on the validation identities.

The two teachers' cached descriptors of the held-out validation faces (CelebA/RMFD identities, never trained
on) are compared as they are, and as an ensemble: each face's two unit descriptors concatenated with weights
√w and √(1 − w), so the ensemble's cosine is w · cos_SFace + (1 − w) · cos_dlib — the score a student matching
both would have to reproduce. No network runs: it reads the crop cache's teacher files (`faceverify teacher
--teacher dlib --source celeba_hq celeba_small rmfd` first; ~25 min on one worker).

    .venv/bin/python bench/teacher_ensemble.py   → reports/teacher_ensemble.{md,json}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from reporting import write_with_reading  # bench/reporting.py, run as a script from bench/

from pruning.calibrate import calibrate
from pruning.data.faceset import held_out, load_faceset
from pruning.data.paths import data_root

SOURCES = ["celeba_hq", "celeba_small", "rmfd"]  # the labelled sources the validation split comes from
REPORTS = Path(__file__).resolve().parents[1] / "reports"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sface-weights", type=float, nargs="+", default=[1.0, 0.8, 0.7, 0.5, 0.0])
    parser.add_argument("--data", type=Path, default=data_root())
    args = parser.parse_args()
    crops_root = args.data / "crops"

    def validation(teacher: str):
        return load_faceset(crops_root, SOURCES, teacher=teacher, keep=held_out)

    sface, dlib = validation("sface"), validation("dlib")
    if not np.array_equal(sface.file, dlib.file):
        raise SystemExit("the two teachers' caches hold different faces; rerun `faceverify teacher`")
    rows = []
    for weight in args.sface_weights:
        ensemble = np.hstack(
            [np.sqrt(weight) * unit(sface.teacher), np.sqrt(1 - weight) * unit(dlib.teacher)]
        )
        metrics = calibrate(unit(ensemble), sface.identity)
        rows.append(
            {
                "sface_weight": weight,
                "tar_at_fmr_1e-3": metrics["tar_at_fmr_1e-3"],
                "tar_at_fmr_1e-4": metrics["tar_at_fmr_1e-4"],
                "eer": metrics["eer"],
            }
        )
        print(json.dumps(rows[-1]))
    summary = {
        "faces": len(sface),
        "identities": len(set(sface.identity)),
        "genuine_pairs": metrics["n_genuine"],
        "impostor_pairs": metrics["n_impostor"],
        "rows": rows,
    }
    (REPORTS / "teacher_ensemble.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# SFace, dlib and their ensemble on the validation identities",
        "",
        "`.venv/bin/python bench/teacher_ensemble.py` (its docstring says how the ensemble is built):"
        f" {summary['faces']} validation faces of {summary['identities']} identities,"
        f" {summary['genuine_pairs']:,} genuine and {summary['impostor_pairs']:,} impostor pairs, the cached"
        " descriptors of each teacher (SFace on the aligned crop, dlib on its own chip from the photo).",
        "",
        "| SFace weight w (dlib 1 − w) | TAR@FMR1e-3 | TAR@FMR1e-4 | EER |",
        "|---|---|---|---|",
        *(
            f"| {r['sface_weight']:.2f} | {r['tar_at_fmr_1e-3']:.3f} | {r['tar_at_fmr_1e-4']:.3f} |"
            f" {100 * r['eer']:.2f} % |"
            for r in rows
        ),
    ]
    write_with_reading(REPORTS / "teacher_ensemble.md", lines)


if __name__ == "__main__":
    main()
