"""Frontal-against-side pairs of the held-out validation identities: how each variant copes with pose.

Side-view faces are the student's weakest case. The validation identities (CelebA/RMFD, held out of training
by hash) carry five landmarks per face in the crop cache's records; a yaw proxy from them
(``faces.quality.yaw_proxy``: the nose's horizontal offset from the eye/mouth mid-line, in inter-ocular
distances) splits the faces into frontal (|yaw| < FRONTAL_YAW) and side (|yaw| > SIDE_YAW). Genuine pairs are
every frontal × side face of one identity; impostor pairs are frontal × side faces of different identities.
Each variant embeds the cached aligned crops through the service's Embedder and decides at its own
published threshold (FMR 1e-3).

    .venv/bin/python bench/pose_pairs.py [--variants REF ...]   → reports/pose_pairs.{md,json}
    .venv/bin/python bench/pose_pairs.py --variants REF --checkpoints RUN/best.pt ... --out NAME
        training checkpoints beside published variants (one pass, at the threshold of their own
        validation record) → reports/NAME.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from reporting import write_with_reading  # bench/reporting.py, run as a script from bench/

from faces.embed import Embedder
from faces.quality import FRONTAL_YAW, SIDE_YAW
from model_store import ModelStore
from pruning.checkpoint import load_checkpoint, torch_embed_fn
from pruning.data.faceset import load_validation
from pruning.data.paths import data_root

SOURCES = ("celeba_hq", "celeba_small", "rmfd")  # the labelled sources the validation split comes from
REPORTS = Path(__file__).resolve().parents[1] / "reports"


def auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    order = np.argsort(np.concatenate([genuine, impostor]), kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float(
        (ranks[: len(genuine)].sum() - len(genuine) * (len(genuine) + 1) / 2) / (len(genuine) * len(impostor))
    )


def scorers(
    variants: list[str], checkpoints: list[Path]
) -> Iterator[tuple[str, Callable[[np.ndarray], np.ndarray], float]]:
    """(label, crops → unit embeddings, FMR-1e-3 threshold): each published variant, then each checkpoint."""
    store = ModelStore()
    for ref in variants:
        embedder = Embedder.from_store(store, ref, intra_op_threads=2)
        yield embedder.ref, embedder.embed, embedder.threshold()
    for path in checkpoints:
        model, checkpoint = load_checkpoint(path)
        if not checkpoint.val:
            raise SystemExit(f"{path} carries no validation record to take its threshold from")
        yield str(path), torch_embed_fn(model), float(checkpoint.val["thresholds"]["1e-3"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        nargs="+",
        # the dlib-taught default, the SFace-taught ones and the teacher itself (reports/pose_pairs.md's rows)
        default=[
            "squeezefacenet@3",
            "squeezefacenet@6",
            "squeezefacenet@7",
            "squeezefacenet@8",
            "squeezefacenet@9",
            "squeezefacenet-int8@6",
            "squeezefacenet-int8@7",
            "squeezerfacenet-taylor-30@5",
            "squeezerfacenet-taylor-40@4",
            "squeezerfacenet-taylor-30@7",
            "squeezerfacenet-taylor-30@8",
            "squeezerfacenet-taylor-40@5",
            "sface@1",
        ],
    )
    parser.add_argument("--checkpoints", nargs="*", type=Path, default=[], help="training checkpoints too")
    parser.add_argument("--out", default="pose_pairs", help="report name under reports/")
    parser.add_argument("--data", type=Path, default=data_root())
    args = parser.parse_args()
    crops_root = args.data / "crops"

    val = load_validation(crops_root, list(SOURCES))
    frontal, side = np.abs(val.yaw) < FRONTAL_YAW, np.abs(val.yaw) > SIDE_YAW
    same = val.identity[:, None] == val.identity[None, :]
    cross = frontal[:, None] & side[None, :]
    genuine_pairs, impostor_pairs = np.argwhere(cross & same), np.argwhere(cross & ~same)

    rows = []
    for label, embed, threshold in scorers(args.variants, args.checkpoints):
        vectors = embed(val.crops[frontal | side])
        index = np.full(len(val), -1)
        index[np.flatnonzero(frontal | side)] = np.arange(len(vectors))
        scores = {
            kind: np.einsum("ij,ij->i", vectors[index[pairs[:, 0]]], vectors[index[pairs[:, 1]]])
            for kind, pairs in (("genuine", genuine_pairs), ("impostor", impostor_pairs))
        }
        tar = float((scores["genuine"] >= threshold).mean())
        far = float((scores["impostor"] >= threshold).mean())
        rows.append(
            {
                "variant": label,
                "tar_at_threshold": tar,
                "far_at_threshold": far,
                "balanced_accuracy": (tar + 1 - far) / 2,
                "auc": auc(scores["genuine"], scores["impostor"]),
                "threshold": threshold,
            }
        )
        print(json.dumps(rows[-1]))
    summary = {
        "faces": len(val),
        "frontal": int(frontal.sum()),
        "side": int(side.sum()),
        "identities_with_both": len(set(val.identity[genuine_pairs[:, 0]])),
        "genuine_pairs": len(genuine_pairs),
        "impostor_pairs": len(impostor_pairs),
        "frontal_below": FRONTAL_YAW,
        "side_above": SIDE_YAW,
        "rows": rows,
    }
    (REPORTS / f"{args.out}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Frontal against side faces of the held-out validation identities",
        "",
        f"`.venv/bin/python bench/pose_pairs.py {' '.join(sys.argv[1:])}`"
        " (its docstring says how the pairs are built):",
        f"{summary['faces']} validation faces, {summary['frontal']} frontal (|yaw| < {FRONTAL_YAW}),"
        f" {summary['side']} side (|yaw| > {SIDE_YAW}); {summary['genuine_pairs']} genuine pairs over"
        f" {summary['identities_with_both']} identities, {summary['impostor_pairs']:,} impostor pairs."
        " Decisions at each variant's published FMR-1e-3 threshold (calibrated on all validation pairs,"
        " mostly frontal).",
        "",
        "| variant | TAR at its threshold | FAR at its threshold | balanced accuracy | AUC |",
        "|---|---|---|---|---|",
        *(
            f"| `{r['variant']}` | {r['tar_at_threshold']:.3f} | {r['far_at_threshold']:.4f} | "
            f"{r['balanced_accuracy']:.3f} | {r['auc']:.4f} |"
            for r in rows
        ),
    ]
    write_with_reading(REPORTS / f"{args.out}.md", lines)


if __name__ == "__main__":
    main()
