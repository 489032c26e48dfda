"""Published variants on the current validation split: the figure the trainer picks checkpoints by.

A training run's validation TAR is only comparable with a published variant's when both are measured on the
same crops. The crop cache was rebuilt with padded detection after the older variants were published, so their
manifests' validation figures belong to the old cache. This script embeds today's held-out validation crops
(identities held out by hash, ``pruning.data.faceset.held_out``) through the service's Embedder (the published
ONNX bytes) and scores every pair exactly as the trainer's ``validate`` does (``pruning.calibrate``).
Never LFW.

    .venv/bin/python bench/validation.py [--variants REF ...]   → reports/validation.{md,json}
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faces.embed import Embedder
from model_store import ModelStore
from pruning.calibrate import calibrate
from pruning.data.faceset import load_validation
from pruning.data.paths import data_root

REPORTS = Path(__file__).resolve().parents[1] / "reports"
# the embedders the reports compare: the plain command reproduces reports/validation.md
DEFAULT_VARIANTS = [
    *(f"squeezefacenet@{v}" for v in range(2, 11)),
    *(f"squeezefacenet-int8@{v}" for v in range(3, 9)),
    *(f"squeezerfacenet-taylor-30@{v}" for v in range(3, 6)),
    "squeezerfacenet-taylor-40@3",
    "squeezerfacenet-taylor-40@4",
    "squeezerfacenet-taylor-30@10",
    "sface@1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument("--data", type=Path, default=data_root())
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    val = load_validation(args.data / "crops")
    store = ModelStore()
    rows = []
    for ref in args.variants:
        embedder = Embedder.from_store(store, ref, intra_op_threads=args.threads)
        figures = calibrate(embedder.embed(val.crops), val.identity)
        rows.append(
            {
                "variant": embedder.ref,
                "tar_at_fmr_1e-3": figures["tar_at_fmr_1e-3"],
                "tar_at_fmr_1e-4": figures.get("tar_at_fmr_1e-4"),
                "eer": figures["eer"],
                "threshold_1e-3": figures["thresholds"]["1e-3"],
            }
        )
        print(json.dumps(rows[-1]))
    summary = {
        "faces": len(val),
        "identities": len(set(val.identity.tolist())),
        "sources": sorted(set(val.source.tolist())),
        "n_genuine": figures["n_genuine"],
        "n_impostor": figures["n_impostor"],
        "rows": rows,
    }
    (REPORTS / "validation.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Published variants on the current validation split",
        "",
        "`.venv/bin/python bench/validation.py` (the docstring says why): "
        f"{summary['faces']:,} held-out faces of {summary['identities']:,} identities"
        f" ({', '.join(summary['sources'])}), {summary['n_genuine']:,} genuine and"
        f" {summary['n_impostor']:,} impostor pairs, scored as the trainer scores checkpoints.",
        "",
        "| variant | TAR@FMR1e-3 | TAR@FMR1e-4 | EER | threshold (FMR 1e-3) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        tar4 = "–" if row["tar_at_fmr_1e-4"] is None else f"{row['tar_at_fmr_1e-4']:.3f}"
        lines.append(
            f"| {row['variant']} | {row['tar_at_fmr_1e-3']:.3f} | {tar4} | {row['eer'] * 100:.2f} % |"
            f" {row['threshold_1e-3']:.3f} |"
        )
    (REPORTS / "validation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
