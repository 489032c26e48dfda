"""``faceverify prep`` (photos → aligned crop cache) and ``faceverify teacher`` (its teacher descriptors)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from faceverify.cli.common import (
    _spec_arguments,
    _spec_from_args,
    add_data_argument,
    data_root_of,
    default_of,
    deferred_parser,
    positive_int,
)

if TYPE_CHECKING:
    from pruning.data.prep import PrepConfig


def register(sub: argparse._SubParsersAction) -> None:
    prep = deferred_parser(
        sub, "prep", _prep_arguments, help="photos → aligned 112×112 crop cache (resumable)"
    )
    prep.set_defaults(handler=cmd_prep)

    teacher = sub.add_parser("teacher", help="cache a teacher's descriptors of prepared crops (resumable)")
    teacher.add_argument("--source", nargs="+", help="prepared caches to describe (default: all)")
    add_data_argument(teacher)
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


def _prep_arguments(prep: argparse.ArgumentParser) -> None:
    from pruning.data.prep import PrepConfig

    prep.add_argument("folder", nargs="?", type=Path, help="any folder of face photos")
    prep.add_argument("--name", help="cache name for FOLDER (default: folder name)")
    prep.add_argument("--labels", type=Path, help="CSV file,identity for FOLDER")
    prep.add_argument("--source", nargs="+", help="named training source(s) from SOURCES.md, or 'all'")
    add_data_argument(prep, help="data root (default: $FACEVERIFY_DATA or ~/.cache/squeezerfacenet)")
    prep.add_argument("--workers", type=positive_int, default=default_of(PrepConfig, "workers"))
    _spec_arguments(prep, default_of(PrepConfig, "spec").name)
    prep.add_argument("--shard-size", type=int, default=default_of(PrepConfig, "shard_size"))


def cmd_prep(args: argparse.Namespace) -> int:
    from pruning.data.prep import load_labels, prepare
    from pruning.data.sources import SOURCES, extract

    root = data_root_of(args)
    config = prep_config(args)
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


def prep_config(args: argparse.Namespace) -> PrepConfig:
    """The ``PrepConfig`` the parsed ``faceverify prep`` flags ask for (flags left unset: its defaults)."""
    from pruning.data.prep import PrepConfig

    spec = _spec_from_args(args, default_of(PrepConfig, "spec").name)  # --preset, else the config's preset
    return PrepConfig(workers=args.workers, spec=spec, shard_size=args.shard_size)


def cmd_teacher(args: argparse.Namespace) -> int:
    from pruning.data.faceset import cache_names
    from pruning.sface import build_sface_cache
    from pruning.teacher import build_teacher_cache

    root = data_root_of(args)
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
