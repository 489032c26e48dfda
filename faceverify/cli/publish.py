"""Into the model store: ``faceverify publish`` (a checkpoint), ``publish-reference`` (a third-party
embedder), ``quantize`` (an int8 child of a published variant) and ``export-mtcnn`` (the detector).

``quantize``'s defaults are ``pruning.quantize.QuantConfig``'s (a module that imports onnx), so its
arguments are added only when it is parsed (``deferred_parser``).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from faceverify.cli.common import (
    FLIP_FUSION_HELP,
    _publish_inputs,
    add_data_argument,
    command,
    data_root_of,
    default_of,
    deferred_parser,
    positive_int,
)
from model_store import ModelStore

if TYPE_CHECKING:
    from pruning.quantize import QuantConfig


def register(sub: argparse._SubParsersAction) -> None:
    pub = sub.add_parser("publish", help="checkpoint → ONNX → LFW + calibrated threshold → model store")
    pub.add_argument("checkpoint", type=Path)
    pub.add_argument("--name", required=True, help="model name in the store, e.g. squeezefacenet")
    pub.add_argument("--pairs", type=Path, required=True, help="LFW pairs.txt (benchmark only, never tuning)")
    pub.add_argument("--images-root", type=Path, required=True)
    add_data_argument(pub)
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
    add_data_argument(ref)
    ref.set_defaults(handler=cmd_publish_reference, parent=None, flip_fusion=False)

    qu = deferred_parser(
        sub,
        "quantize",
        _quantize_arguments,
        help="a published float embedder → static int8 (QDQ), calibrated on validation crops",
    )
    qu.set_defaults(handler=cmd_quantize)


def register_export_mtcnn(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export-mtcnn", help="export facenet-pytorch's MTCNN to ONNX and publish it")
    export.set_defaults(handler=cmd_export_mtcnn)


def _short_float(value: float) -> str:
    """1e-3, not 0.001: how the help writes false-match rates."""
    mantissa, exponent = f"{value:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _quantize_arguments(qu: argparse.ArgumentParser) -> None:
    from pruning.quantize import Method, QuantConfig

    def default(name: str) -> object:
        return default_of(QuantConfig, name)

    fmrs = ", ".join(_short_float(f) for f in default_of(QuantConfig, "fmrs"))
    qu.add_argument("ref", help="the float parent: name, name@version or alias (e.g. default)")
    qu.add_argument("--name", help="name of the new variant (default: the parent's name + -int8)")
    add_data_argument(qu)
    qu.add_argument(
        "--calibration-crops",
        type=positive_int,
        default=default("calibration_crops"),
        help="validation crops for ranges",
    )
    qu.add_argument("--method", choices=list(typing.get_args(Method)), default=default("method"))
    # QuantConfig.per_channel is True: the flag turns it off
    qu.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    qu.add_argument("--seed", type=int, default=default("seed"), help="which validation crops calibrate")
    qu.add_argument(
        "--val-fraction",
        type=float,
        default=default("val_fraction"),
        help="held-out identity share (as training)",
    )
    # No argparse default (action="append" would add to it): unset means QuantConfig's fmrs.
    qu.add_argument(
        "--fmr", type=float, action="append", help=f"target false-match rate (repeatable; default {fmrs})"
    )
    qu.add_argument("--pairs", type=Path, help="LFW pairs.txt: also measure LFW (benchmark only)")
    qu.add_argument("--images-root", type=Path)
    qu.add_argument("--alias", help="point this alias at the new version")


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
    from pruning.reference import publish_sface

    inputs = _publish_inputs(args)
    manifest = publish_sface(
        ModelStore(args.store),
        inputs["benchmark"],  # type: ignore[arg-type]
        data_root_of(args) / "teachers",
        command=inputs["command"],  # type: ignore[arg-type]
    )
    print(
        json.dumps(
            {"published": manifest.ref, "lfw": manifest.metrics["lfw"], "thresholds": manifest.thresholds}
        )
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from pruning.publish import git_commit
    from pruning.quantize import quantize_variant

    if (args.pairs is None) != (args.images_root is None):
        print("faceverify quantize: --pairs and --images-root go together", file=sys.stderr)
        return 2
    root = data_root_of(args)
    config = quant_config(args)
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
            command=command(),
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


def quant_config(args: argparse.Namespace) -> QuantConfig:
    """The ``QuantConfig`` the parsed ``faceverify quantize`` flags ask for (unset flags: its defaults)."""
    from pruning.quantize import QuantConfig

    return QuantConfig(
        calibration_crops=args.calibration_crops,
        method=args.method,
        per_channel=not args.per_tensor,
        seed=args.seed,
        val_fraction=args.val_fraction,
        fmrs=tuple(args.fmr) if args.fmr else default_of(QuantConfig, "fmrs"),
    )


def cmd_export_mtcnn(args: argparse.Namespace) -> int:
    from pruning.mtcnn_export import export_and_publish
    from pruning.publish import git_commit

    manifest = export_and_publish(ModelStore(args.store), code_commit=git_commit())
    print(f"published {manifest.ref}: {manifest.metrics}")
    return 0
