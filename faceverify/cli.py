"""``faceverify`` — one console script, one subcommand per job.

Each subcommand imports what it needs inside its handler so ``faceverify models list`` never pays for
torch, and the serving image (which has no torch) can run every serving-side subcommand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store import DEFAULT_ROOT, ModelStore, ModelStoreError


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


# ---- models ---------------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    store = ModelStore(args.store)
    if args.action == "list":
        aliases = store.aliases()
        rows = []
        for ref in store.refs():
            manifest = store.manifest(ref)
            rows.append(
                {
                    "ref": str(ref),
                    "kind": manifest.kind,
                    "params": manifest.params,
                    "flops": manifest.flops,
                    "aliases": ",".join(a for a, target in aliases.items() if target == str(ref)),
                    "created_at": manifest.created_at.isoformat(timespec="seconds"),
                }
            )
        if args.json:
            print(json.dumps({"models": rows, "aliases": aliases}, indent=2))
        elif rows:
            _print_table(rows, ["ref", "kind", "params", "flops", "aliases", "created_at"])
        else:
            print(f"no models in {store.root}")
        return 0

    refs = [args.ref] if args.ref else [str(r) for r in store.refs()]
    if args.action == "show":
        if not args.ref:
            print("faceverify models show: a model reference is required", file=sys.stderr)
            return 2
        print(store.manifest(args.ref).model_dump_json(indent=2))
        return 0

    # verify
    results = []
    for ref in refs:
        try:
            store.verify(ref)
            results.append({"ref": str(store.resolve(ref)), "ok": True, "error": ""})
        except ModelStoreError as error:
            results.append({"ref": ref, "ok": False, "error": str(error)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(results, ["ref", "ok", "error"])
    return 0 if all(r["ok"] for r in results) else 1


# ---- detect ---------------------------------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    import cv2

    from service.errors import DomainError
    from service.vision.align import align_face
    from service.vision.decode import decode_image
    from service.vision.detect import DetectorConfig, MTCNNDetector

    detector = MTCNNDetector.from_store(
        ModelStore(args.store), args.detector, DetectorConfig(min_face_size=args.min_face_size)
    )
    try:
        image = decode_image(Path(args.image).read_bytes(), max_pixels=args.max_pixels)
    except DomainError as error:
        print(json.dumps({"image": args.image, "error": error.code, "message": error.message}))
        return 1
    faces = detector.detect(image)
    if args.crops:
        out_dir = Path(args.crops)
        out_dir.mkdir(parents=True, exist_ok=True)
        for index, face in enumerate(faces):
            crop = align_face(image, face.landmarks, args.template)
            cv2.imwrite(str(out_dir / f"{Path(args.image).stem}_face{index}.png"), crop[:, :, ::-1])
    print(json.dumps({"image": args.image, "faces": [f.to_dict() for f in faces]}, indent=2))
    return 0


# ---- export-mtcnn ---------------------------------------------------------------------------------
def cmd_export_mtcnn(args: argparse.Namespace) -> int:
    from pruning.mtcnn_export import export_and_publish

    manifest = export_and_publish(ModelStore(args.store), code_commit=_git_commit())
    print(f"published {manifest.ref}: {manifest.metrics}")
    return 0


# ---- serve ----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.config import Settings
    from service.main import create_app

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceverify", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_ROOT, help="model store root (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list, show or verify published models")
    models.add_argument("action", choices=["list", "show", "verify"])
    models.add_argument("ref", nargs="?", help="name, name@version or alias (verify: default all)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=cmd_models)

    detect = sub.add_parser("detect", help="detect faces in one image and print them as JSON")
    detect.add_argument("image")
    detect.add_argument("--crops", metavar="DIR", help="write the aligned 112×112 crops here")
    detect.add_argument("--detector", default="mtcnn", help="detector model reference")
    detect.add_argument("--template", default="arcface_112", help="alignment template")
    detect.add_argument("--min-face-size", type=int, default=20)
    detect.add_argument("--max-pixels", type=int, default=40_000_000)
    detect.set_defaults(handler=cmd_detect)

    serve = sub.add_parser("serve", help="start the REST service (settings from FACEVERIFY_* env)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=cmd_serve)

    export = sub.add_parser("export-mtcnn", help="export facenet-pytorch's MTCNN to ONNX and publish it")
    export.set_defaults(handler=cmd_export_mtcnn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ModelStoreError as error:
        print(f"faceverify: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
