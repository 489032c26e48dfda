"""``faceverify`` — one console script, one subcommand per job.

One module per family of subcommands, each registering its subparsers and holding their handlers:
``models`` (the store), ``evaluate`` (detect, eval), ``serve``, ``data`` (prep, teacher), ``train`` (train,
prune) and ``publish`` (publish, publish-reference, quantize, export-mtcnn); ``common`` holds what they
share. Handlers import what they need when they run, so ``faceverify models list`` never pays for torch, and
the serving image (which has no torch and no ``pruning`` package) can run every serving-side subcommand.
Flags whose defaults are read from ``pruning`` config types are added only once their subcommand is chosen
(``common.deferred_parser``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from faceverify.cli import data, evaluate, models, publish, serve, train
from faceverify.cli.common import CommandParser
from model_store import DEFAULT_ROOT, ModelStoreError

assert __doc__ is not None
# In the order `faceverify --help` has always listed the subcommands.
REGISTER = (
    models.register,  # models
    evaluate.register,  # detect
    serve.register,  # serve
    data.register,  # prep, teacher
    train.register,  # train, prune, soup
    publish.register,  # publish, publish-reference, quantize
    evaluate.register_eval,  # eval
    publish.register_export_mtcnn,  # export-mtcnn
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceverify", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_ROOT, help="model store root (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for register in REGISTER:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ModelStoreError as error:
        print(f"faceverify: {error}", file=sys.stderr)
        return 1
