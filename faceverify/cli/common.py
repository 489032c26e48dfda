"""What the subcommand families share: argument types and groups, tables, defaults read from config types.

Torch-free, and free of the ``pruning`` package at import time: the serving image has neither, and builds
the whole parser for ``faceverify models`` and ``faceverify serve``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model_store import PreprocessSpec

DATA_HELP = "data root (default: $FACEVERIFY_DATA or ~/.cache/...)"
FLIP_FUSION_HELP = "embed each crop and its mirror image and fuse them inside the ONNX graph (2x FLOPs)"


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


# ---- defaults from the library's config types -----------------------------------------------------
def default_of(config: type, name: str) -> Any:
    """The default of dataclass ``config``'s field ``name`` (a fresh one for a ``default_factory``), so a
    flag's default is the library's and changes with it. A field without a default is a programming error."""
    for field in dataclasses.fields(config):
        if field.name != name:
            continue
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        raise TypeError(f"{config.__name__}.{name} has no default")
    raise AttributeError(f"{config.__name__} has no field {name!r}")


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser whose arguments may be added on first use (see ``deferred_parser``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add_arguments)

    def populate(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.populate()  # what the top-level parser calls once this subcommand is chosen (--help too)
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.populate()
        return super().format_usage()

    def format_help(self) -> str:
        self.populate()
        return super().format_help()


def deferred_parser(
    sub: argparse._SubParsersAction,
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """``sub.add_parser(name, **kwargs)`` whose arguments ``add_arguments`` adds only when this subcommand is
    parsed or its help printed: for offline subcommands whose defaults live in ``pruning`` config types
    (torch, onnx), which neither the serving image nor ``faceverify models list`` should import."""
    parser = sub.add_parser(name, **kwargs)
    if isinstance(parser, CommandParser):
        parser.defer(add_arguments)
    else:  # a plain subparsers action (not build_parser's): no laziness, same parser
        add_arguments(parser)
    return parser


# ---- argument groups ------------------------------------------------------------------------------
def add_data_argument(parser: argparse.ArgumentParser, help: str = DATA_HELP) -> None:
    parser.add_argument("--data", type=Path, help=help)


def data_root_of(args: argparse.Namespace) -> Path:
    """``--data``, else ``$FACEVERIFY_DATA`` or ``~/.cache/squeezerfacenet`` (``pruning.data.paths``)."""
    from pruning.data.paths import data_root

    return args.data or data_root()


def _spec_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    from faces.spec import PRESETS

    parser.add_argument("--preset", choices=sorted(PRESETS), help=f"preprocessing spec (default: {default})")
    parser.add_argument("--min-face-size", type=int, help="smallest face searched (default: the spec's)")
    parser.add_argument("--max-pixels", type=int, help="pixel cap of a photo (default: the spec's)")


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


# ---- what publishing records ----------------------------------------------------------------------
def command() -> str | None:
    """The command line a published manifest records: only when run as the ``faceverify`` script."""
    return "faceverify " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("faceverify") else None


def _publish_inputs(args: argparse.Namespace) -> dict[str, object]:
    """What publishing measures a checkpoint on, and the lineage and command it records (publish, prune)."""
    from pruning.publish import Benchmark

    root = data_root_of(args)
    return {
        "benchmark": Benchmark(root / "crops", args.pairs, args.images_root, cache_dir=root / "eval-cache"),
        "parent": args.parent,
        "flip_fusion": args.flip_fusion,
        "command": command(),
    }
