"""``faceverify`` — one console script, one subcommand per job.

Each subcommand imports what it needs inside its handler so ``faceverify models list`` never pays for
torch, and the serving image (which has no torch) can run every serving-side subcommand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from model_store import DEFAULT_ROOT, ModelStore, ModelStoreError, PreprocessSpec


def positive_int(text: str) -> int:
    """argparse type for counts that must be ≥ 1 (workers, threads): 0 is refused, not reinterpreted."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
def _spec_from_args(args: argparse.Namespace, base: str) -> PreprocessSpec:
    """A preset with the overrides given on the command line (flags left unset keep the preset's value)."""
    from faces.spec import preset

    spec = preset(getattr(args, "preset", None) or base)
    overrides = {
        name: getattr(args, name)
        for name in ("detector", "template", "min_face_size", "max_pixels")
        if getattr(args, name, None) is not None
    }
    return PreprocessSpec.model_validate(spec.model_dump() | overrides) if overrides else spec


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


# ---- prep -----------------------------------------------------------------------------------------
def cmd_prep(args: argparse.Namespace) -> int:
    from pruning.data.paths import data_root
    from pruning.data.prep import PrepConfig, load_labels, prepare
    from pruning.data.sources import SOURCES, extract

    root = args.data or data_root()
    config = PrepConfig(
        workers=args.workers, spec=_spec_from_args(args, "training"), shard_size=args.shard_size
    )
    jobs: list[tuple[str, Path, Path | None]] = []
    if args.source:
        names = list(SOURCES) if args.source == ["all"] else args.source
        for name in names:
            if name not in SOURCES:
                print(f"unknown source {name!r}; known: {', '.join(SOURCES)}", file=sys.stderr)
                return 2
            folder = extract(SOURCES[name], root / "raw")
            jobs.append((name, folder, folder / "labels.csv"))
    elif args.folder:
        jobs.append((args.name or args.folder.name, args.folder, args.labels))
    else:
        print("faceverify prep: give a FOLDER or --source NAME", file=sys.stderr)
        return 2
    for name, folder, labels in jobs:
        counts = prepare(folder, root / "crops" / name, name=name, labels=load_labels(labels), config=config)
        print(json.dumps({"source": name, **counts}))
    return 0


# ---- teacher --------------------------------------------------------------------------------------
def cmd_teacher(args: argparse.Namespace) -> int:
    from pruning.data.faceset import cache_names
    from pruning.data.paths import data_root
    from pruning.sface import build_sface_cache
    from pruning.teacher import build_teacher_cache

    root = args.data or data_root()
    crops_root = root / "crops"
    names = args.source or cache_names(crops_root)
    for name in names:
        if args.teacher == "sface":
            described = build_sface_cache(
                crops_root / name, root / "teachers", mirror=args.mirror, threads=args.workers
            )
        else:
            described = build_teacher_cache(crops_root / name, workers=args.workers)
        print(json.dumps({"source": name, "teacher": args.teacher, "described": described}))
    return 0


# ---- eval -----------------------------------------------------------------------------------------
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


# ---- train ----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from pruning.checkpoint import materialise
    from pruning.data.paths import data_root
    from pruning.models import FAMILIES
    from pruning.train import TrainConfig, train

    if args.family is not None and (args.init is not None or args.family not in FAMILIES):
        why = "--init brings its own architecture" if args.init else f"choose from {', '.join(FAMILIES)}"
        print(f"faceverify train: --family {args.family}: {why}", file=sys.stderr)
        return 2
    if args.pooling is not None and args.family not in (None, "squeezefacenet"):
        print(f"faceverify train: --pooling is a squeezefacenet option, not {args.family}'s", file=sys.stderr)
        return 2
    crops_root = (args.data or data_root()) / "crops"
    init = (
        materialise(args.init, args.run_dir, crops_root=crops_root, store_root=args.store)
        if args.init
        else None
    )
    config = TrainConfig(
        run_dir=args.run_dir,
        crops_root=crops_root,
        sources=args.source,
        teacher=args.teacher,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
        init=init,
        max_steps=args.max_steps,
        compile=not args.no_compile,
        val_every=args.val_every,
        seed=args.seed,
        pooling=args.pooling,
        refit_head=args.refit_head,
        arch={"family": args.family} if args.family else {},
    )
    best = train(config)
    print(json.dumps({"best": str(best), "run_dir": str(args.run_dir)}))
    return 0


# ---- prune ----------------------------------------------------------------------------------------
def cmd_prune(args: argparse.Namespace) -> int:
    from pruning.data.paths import data_root
    from pruning.prune import PruneConfig, prune

    if args.publish_as and (args.pairs is None or args.images_root is None):
        print("faceverify prune: --publish-as needs --pairs and --images-root", file=sys.stderr)
        return 2  # before the run, not after half an hour of it
    from pruning.checkpoint import materialise

    if (args.checkpoint is None) == (args.from_variant is None):
        print("faceverify prune: give a CHECKPOINT or --from VARIANT (one of them)", file=sys.stderr)
        return 2
    crops_root = (args.data or data_root()) / "crops"
    dense = materialise(
        args.checkpoint or args.from_variant, args.run_dir, crops_root=crops_root, store_root=args.store
    )
    config = PruneConfig(
        run_dir=args.run_dir,
        checkpoint=dense,
        crops_root=crops_root,
        criterion=args.criterion,
        pruning_ratio=args.pruning_ratio,
        iterative_steps=args.iterative_steps,
        levels=tuple(args.levels),
        importance_batches=args.importance_batches,
        finetune_steps=args.finetune_steps,
        final_finetune_steps=args.final_finetune_steps,
        batch_size=args.batch_size,
        ignored_layers=args.ignored_layers or [],
        round_to=args.round_to,
        threads=args.threads,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    summary = prune(config)
    last = summary["history"][-1]  # type: ignore[index]
    print(
        json.dumps(
            {"run_dir": str(args.run_dir), "removed_share": last["removed_share"], "params": last["params"]}
        )
    )
    if args.publish_as:
        from pruning.publish import publish_levels

        for manifest in publish_levels(
            ModelStore(args.store), args.run_dir, name_prefix=args.publish_as, **_publish_inputs(args)
        ):
            print(json.dumps({"published": manifest.ref, "lfw": manifest.metrics["lfw"]}))
    return 0


# ---- publish --------------------------------------------------------------------------------------
FLIP_FUSION_HELP = "embed each crop and its mirror image and fuse them inside the ONNX graph (2x FLOPs)"


def _publish_inputs(args: argparse.Namespace) -> dict[str, object]:
    """What publishing measures a checkpoint on, and the lineage and command it records (publish, prune)."""
    from pruning.data.paths import data_root
    from pruning.publish import Benchmark

    root = args.data or data_root()
    return {
        "benchmark": Benchmark(root / "crops", args.pairs, args.images_root, cache_dir=root / "eval-cache"),
        "parent": args.parent,
        "flip_fusion": args.flip_fusion,
        "command": "faceverify " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("faceverify") else None,
    }


def cmd_publish(args: argparse.Namespace) -> int:
    from pruning.publish import publish_checkpoint

    manifest = publish_checkpoint(
        ModelStore(args.store),
        args.checkpoint,
        name=args.name,
        alias=args.alias,
        description=args.description,
        **_publish_inputs(args),
    )
    print(
        json.dumps(
            {"published": manifest.ref, "lfw": manifest.metrics["lfw"], "thresholds": manifest.thresholds}
        )
    )
    return 0


def cmd_publish_reference(args: argparse.Namespace) -> int:
    from pruning.data.paths import data_root
    from pruning.reference import publish_sface

    inputs = _publish_inputs(args)
    manifest = publish_sface(
        ModelStore(args.store),
        inputs["benchmark"],  # type: ignore[arg-type]
        (args.data or data_root()) / "teachers",
        command=inputs["command"],  # type: ignore[arg-type]
    )
    print(
        json.dumps(
            {"published": manifest.ref, "lfw": manifest.metrics["lfw"], "thresholds": manifest.thresholds}
        )
    )
    return 0


# ---- quantize -------------------------------------------------------------------------------------
def cmd_quantize(args: argparse.Namespace) -> int:
    from pruning.data.paths import data_root
    from pruning.publish import git_commit
    from pruning.quantize import QuantConfig, quantize_variant

    if (args.pairs is None) != (args.images_root is None):
        print("faceverify quantize: --pairs and --images-root go together", file=sys.stderr)
        return 2
    root = args.data or data_root()
    config = QuantConfig(
        calibration_crops=args.calibration_crops,
        method=args.method,
        per_channel=not args.per_tensor,
        seed=args.seed,
        val_fraction=args.val_fraction,
        fmrs=tuple(args.fmr) if args.fmr else QuantConfig.fmrs,
    )
    store = ModelStore(args.store)
    try:
        manifest = quantize_variant(
            store,
            args.ref,
            root / "crops",
            name=args.name,
            config=config,
            pairs=args.pairs,
            images_root=args.images_root,
            cache_dir=root / "eval-cache",
            command="faceverify " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("faceverify") else None,
            code_commit=git_commit(),
        )
    except (ValueError, RuntimeError) as error:  # too few / LFW-looking / missing calibration faces
        print(f"faceverify quantize: {error}", file=sys.stderr)
        return 1
    if args.alias:
        store.set_alias(args.alias, manifest.ref)
    print(json.dumps({"published": manifest.ref, "parent": manifest.parent, "metrics": manifest.metrics,
                      "thresholds": manifest.thresholds}, indent=2))  # fmt: skip
    return 0


# ---- export-mtcnn ---------------------------------------------------------------------------------
def cmd_export_mtcnn(args: argparse.Namespace) -> int:
    from pruning.mtcnn_export import export_and_publish
    from pruning.publish import git_commit

    manifest = export_and_publish(ModelStore(args.store), code_commit=git_commit())
    print(f"published {manifest.ref}: {manifest.metrics}")
    return 0


# ---- serve ----------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers > 1:
        return _serve_gunicorn(args)
    import logging

    import uvicorn

    from service.config import Settings
    from service.main import create_app
    from service.server import uvicorn_options

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # uvicorn's access log prints raw paths, and /v1/users/{user_id} paths carry user ids; the service writes
    # its own access line (logger service.access) with the route template instead.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        **uvicorn_options(settings),  # header limits and timeouts, as under gunicorn
    )
    return 0


GUNICORN_APP = "service.main:create_app()"  # gunicorn calls the factory in each worker


def _serve_gunicorn(args: argparse.Namespace) -> int:
    """Several worker processes: gunicorn with uvicorn workers, configured by ``service.gunicorn_conf``."""
    env = dict(os.environ, FACEVERIFY_WORKERS=str(args.workers))
    if args.host is not None:
        env["FACEVERIFY_HOST"] = args.host
    if args.port is not None:
        env["FACEVERIFY_PORT"] = str(args.port)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", GUNICORN_APP]
    # exec: gunicorn's master becomes this process, so signals to it (SIGTERM, SIGHUP) reach gunicorn.
    os.execvpe(command[0], command, env)


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
    _spec_arguments(detect, "serving")
    detect.add_argument("--detector", help="detector model reference (default: the spec's)")
    detect.add_argument("--template", help="alignment template (default: the spec's)")
    detect.set_defaults(handler=cmd_detect)

    serve = sub.add_parser("serve", help="start the REST service (settings from FACEVERIFY_* env)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes; above 1 runs gunicorn with uvicorn workers (default 1)",
    )
    serve.set_defaults(handler=cmd_serve)

    prep = sub.add_parser("prep", help="photos → aligned 112×112 crop cache (resumable)")
    prep.add_argument("folder", nargs="?", type=Path, help="any folder of face photos")
    prep.add_argument("--name", help="cache name for FOLDER (default: folder name)")
    prep.add_argument("--labels", type=Path, help="CSV file,identity for FOLDER")
    prep.add_argument("--source", nargs="+", help="named training source(s) from SOURCES.md, or 'all'")
    prep.add_argument(
        "--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/squeezerfacenet)"
    )
    prep.add_argument("--workers", type=positive_int, default=2)
    _spec_arguments(prep, "training")
    prep.add_argument("--shard-size", type=int, default=2048)
    prep.set_defaults(handler=cmd_prep)

    teacher = sub.add_parser("teacher", help="cache a teacher's descriptors of prepared crops (resumable)")
    teacher.add_argument("--source", nargs="+", help="prepared caches to describe (default: all)")
    teacher.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    teacher.add_argument(
        "--workers", type=positive_int, default=2, help="processes (dlib) or threads (sface)"
    )
    teacher.add_argument(
        "--teacher",
        choices=("sface", "dlib"),
        default="sface",
        help="sface: every cached crop and its mirror (no re-detection); dlib: its own chip from the photo",
    )
    teacher.add_argument("--mirror", action="store_true", help="sface: the mirror-image pass")
    teacher.set_defaults(handler=cmd_teacher)

    tr = sub.add_parser("train", help="distil the teacher into a student network (resumable)")
    tr.add_argument("--run-dir", type=Path, required=True, help="checkpoints and curves; rerun to resume")
    tr.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    tr.add_argument("--source", nargs="+", help="crop caches to train on (default: all with teacher files)")
    tr.add_argument("--epochs", type=int, default=10)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--threads", type=positive_int, default=2)
    tr.add_argument(
        "--init",
        "--from",
        dest="init",
        help="start from these weights (a new schedule): a checkpoint or a published variant (name@version)",
    )
    tr.add_argument(
        "--teacher", choices=("sface", "dlib"), default="sface", help="whose cached descriptors are targets"
    )
    tr.add_argument(
        "--refit-head",
        type=int,
        default=0,
        metavar="N",
        help="with --init from another teacher's student: ridge-fit the embedding layer on N faces first",
    )
    tr.add_argument(
        "--family",
        help="architecture of a fresh student: squeezefacenet (default), mobilenetv2 or resnet50",
    )
    tr.add_argument("--max-steps", type=int)
    tr.add_argument("--val-every", type=int, default=1000)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--pooling",
        choices=("gap", "gdc"),
        help="embedding pooling (default: the --init network's, else gap); gdc converts a gap --init as is",
    )
    tr.add_argument("--no-compile", action="store_true", help="eager PyTorch: no compile, ~30 %% slower")
    tr.set_defaults(handler=cmd_train)

    pr = sub.add_parser("prune", help="iterative filter pruning with fine-tuning (resumable)")
    pr.add_argument("checkpoint", type=Path, nargs="?", help="the dense model checkpoint")
    pr.add_argument(
        "--from", dest="from_variant", metavar="VARIANT", help="or a published variant (name@version, alias)"
    )
    pr.add_argument("--run-dir", type=Path, required=True)
    pr.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    pr.add_argument(
        "--criterion", default="taylor", help="taylor | taylor_weight | taylor_weight_sum_sq | l1 | random"
    )
    pr.add_argument("--pruning-ratio", type=float, default=0.5)
    pr.add_argument("--iterative-steps", type=int, default=10)
    pr.add_argument("--levels", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    pr.add_argument("--importance-batches", type=int, default=8)
    pr.add_argument("--finetune-steps", type=int, default=100)
    pr.add_argument("--final-finetune-steps", type=int, default=400)
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--ignored-layers", nargs="*", help="layers that keep every filter (e.g. stem)")
    pr.add_argument(
        "--round-to",
        type=positive_int,
        default=1,
        help="keep each thinned layer at a multiple of this many filters (16: faster on ONNX Runtime CPU)",
    )
    pr.add_argument("--threads", type=positive_int, default=2)
    pr.add_argument("--val-fraction", type=float, default=0.1, help="share of labelled identities held out")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument(
        "--publish-as",
        metavar="PREFIX",
        help="then export, measure and publish every level as PREFIX-XX (needs --pairs, --images-root)",
    )
    pr.add_argument("--parent", help="name@version of the dense model, recorded as each level's parent")
    pr.add_argument("--flip-fusion", action="store_true", help=FLIP_FUSION_HELP)
    pr.add_argument("--pairs", type=Path, help="LFW pairs.txt for --publish-as (benchmark only)")
    pr.add_argument("--images-root", type=Path)
    pr.set_defaults(handler=cmd_prune)

    pub = sub.add_parser("publish", help="checkpoint → ONNX → LFW + calibrated threshold → model store")
    pub.add_argument("checkpoint", type=Path)
    pub.add_argument("--name", required=True, help="model name in the store, e.g. squeezefacenet")
    pub.add_argument("--pairs", type=Path, required=True, help="LFW pairs.txt (benchmark only, never tuning)")
    pub.add_argument("--images-root", type=Path, required=True)
    pub.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    pub.add_argument("--parent", help="name@version this model derives from")
    pub.add_argument("--alias", help="point this alias (e.g. default) at the new version")
    pub.add_argument("--description", default="")
    pub.add_argument("--flip-fusion", action="store_true", help=FLIP_FUSION_HELP)
    pub.set_defaults(handler=cmd_publish)

    ref = sub.add_parser(
        "publish-reference", help="verify, measure and publish a third-party reference embedder (not default)"
    )
    ref.add_argument("model", choices=("sface",))
    ref.add_argument("--pairs", type=Path, required=True, help="LFW pairs.txt (benchmark only, never tuning)")
    ref.add_argument("--images-root", type=Path, required=True)
    ref.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    ref.set_defaults(handler=cmd_publish_reference, parent=None, flip_fusion=False)

    qu = sub.add_parser(
        "quantize", help="a published float embedder → static int8 (QDQ), calibrated on validation crops"
    )
    qu.add_argument("ref", help="the float parent: name, name@version or alias (e.g. default)")
    qu.add_argument("--name", help="name of the new variant (default: the parent's name + -int8)")
    qu.add_argument("--data", type=Path, help="data root (default: $FACEVERIFY_DATA or ~/.cache/...)")
    qu.add_argument("--calibration-crops", type=positive_int, default=512, help="validation crops for ranges")
    qu.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax")
    qu.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    qu.add_argument("--seed", type=int, default=0, help="which validation crops calibrate")
    qu.add_argument("--val-fraction", type=float, default=0.1, help="held-out identity share (as training)")
    qu.add_argument(
        "--fmr", type=float, action="append", help="target false-match rate (repeatable; default 1e-3, 1e-4)"
    )
    qu.add_argument("--pairs", type=Path, help="LFW pairs.txt: also measure LFW (benchmark only)")
    qu.add_argument("--images-root", type=Path)
    qu.add_argument("--alias", help="point this alias at the new version")
    qu.set_defaults(handler=cmd_quantize)

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

    export = sub.add_parser("export-mtcnn", help="export facenet-pytorch's MTCNN to ONNX and publish it")
    export.set_defaults(handler=cmd_export_mtcnn)
    return parser


def _spec_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    from faces.spec import PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), help=f"preprocessing spec (default: {default})")
    parser.add_argument("--min-face-size", type=int, help="smallest face searched (default: the spec's)")
    parser.add_argument("--max-pixels", type=int, help="pixel cap of a photo (default: the spec's)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ModelStoreError as error:
        print(f"faceverify: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
