"""``faceverify detect`` (faces of one photo) and ``faceverify eval`` (LFW-protocol verification accuracy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceverify.cli.common import _spec_arguments, _spec_from_args, positive_int
from model_store import ModelStore


def register(sub: argparse._SubParsersAction) -> None:
    detect = sub.add_parser("detect", help="detect faces in one image and print them as JSON")
    detect.add_argument("image")
    detect.add_argument("--crops", metavar="DIR", help="write the aligned 112×112 crops here")
    _spec_arguments(detect, "serving")
    detect.add_argument("--detector", help="detector model reference (default: the spec's)")
    detect.add_argument("--template", help="alignment template (default: the spec's)")
    detect.set_defaults(handler=cmd_detect)


def register_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="verification accuracy end to end from raw photos (LFW protocol)")
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", help="published embedder NAME[@VERSION]")
    which.add_argument("--torch", type=Path, metavar="CHECKPOINT", help="a training checkpoint")
    which.add_argument("--teacher", action="store_true", help="the dlib teacher")
    ev.add_argument(
        "--pairs", type=Path, required=True, help="LFW pairs.txt or CSV path_a,path_b,same[,fold]"
    )
    ev.add_argument("--images-root", type=Path, required=True)
    ev.add_argument("--json", type=Path, help="write metrics here (and a ROC PNG beside it)")
    ev.add_argument(
        "--scores", type=Path, help="CSV of every pair's score (and, for --variant, its decision)"
    )
    ev.add_argument("--threads", type=positive_int, default=2)
    ev.add_argument(
        "--face-selection",
        choices=["largest", "centre"],
        help="which detected face a photo stands for (default: centre for LFW pairs.txt, largest for CSV)",
    )
    ev.set_defaults(handler=cmd_eval)


def cmd_detect(args: argparse.Namespace) -> int:
    import cv2

    from faces.errors import DomainError
    from faces.pipeline import FacePipeline

    pipeline = FacePipeline.from_spec(_spec_from_args(args, "serving"), ModelStore(args.store))
    try:
        image = pipeline.decode(Path(args.image).read_bytes())
    except DomainError as error:
        print(json.dumps({"image": args.image, "error": error.code, "message": error.message}))
        return 1
    found = pipeline.acquire(image)
    faces = found.faces
    if args.crops:
        out_dir = Path(args.crops)
        out_dir.mkdir(parents=True, exist_ok=True)
        for index, face in enumerate(faces):
            crop = pipeline.align(image, face)
            cv2.imwrite(str(out_dir / f"{Path(args.image).stem}_face{index}.png"), crop[:, :, ::-1])
    chosen = next((i for i, f in enumerate(faces) if f is found.face), None)
    report = {
        "image": args.image,
        "faces": [f.to_dict() for f in faces],
        "chosen": chosen,  # the face the service would embed (None: none), and why it would refuse it
        "rejection": found.rejection,
        "preprocess": pipeline.spec.model_dump(),
    }
    print(json.dumps(report, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from faces.evaluation import (
        benchmark_spec,
        crop_embedder,
        evaluate,
        read_pairs,
        write_report,
        write_scores,
    )
    from pruning.data.paths import data_root

    store = ModelStore(args.store)
    if args.teacher:
        from pruning.teacher import DlibTeacher

        label, embed = "dlib-teacher", DlibTeacher().embed_faces
    elif args.torch:
        from pruning.checkpoint import load_embedder_checkpoint

        label, embed = load_embedder_checkpoint(args.torch)
    elif args.variant:
        from faces.embed import Embedder

        embedder = Embedder.from_store(store, args.variant, intra_op_threads=args.threads)
        label, embed = embedder.ref, crop_embedder(embedder.embed, embedder.template)
    else:
        print("faceverify eval: give --variant, --torch or --teacher", file=sys.stderr)
        return 2
    pairs = read_pairs(args.pairs)
    spec = benchmark_spec(args.pairs, args.face_selection)
    metrics = evaluate(
        pairs, args.images_root, embed, store=store, cache_dir=data_root() / "eval-cache", spec=spec
    )
    summary = {
        k: v
        for k, v in metrics.items()
        if k not in ("roc", "fold_accuracies", "scores", "preprocess", "faces")
    }
    summary["preprocess"] = spec.name
    print(json.dumps({"label": label, **summary}, indent=2))
    if args.json:
        write_report(metrics, args.json, label)
    if args.scores:
        threshold = embedder.threshold() if args.variant else None  # the threshold the API decides with
        write_scores(pairs, metrics["scores"], args.scores, threshold)  # type: ignore[arg-type]
    return 0
