"""``faceverify train`` (distillation into a student) and ``faceverify prune`` (filter pruning + fine-tuning).

Their flags' defaults are ``pruning.train.TrainConfig``'s and ``pruning.prune.PruneConfig``'s; those modules
import torch, so the arguments are added only when one of these subcommands is parsed (``deferred_parser``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from faceverify.cli.common import (
    FLIP_FUSION_HELP,
    _publish_inputs,
    add_data_argument,
    data_root_of,
    default_of,
    deferred_parser,
    positive_int,
)
from model_store import ModelStore

if TYPE_CHECKING:
    from pruning.prune import PruneConfig
    from pruning.train import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    tr = deferred_parser(
        sub, "train", _train_arguments, help="distil the teacher into a student network (resumable)"
    )
    tr.set_defaults(handler=cmd_train)
    pr = deferred_parser(
        sub, "prune", _prune_arguments, help="iterative filter pruning with fine-tuning (resumable)"
    )
    pr.set_defaults(handler=cmd_prune)
    so = sub.add_parser(
        "soup", help="greedy weight average of checkpoints restarted from one parent (validation-scored)"
    )
    so.add_argument(
        "candidates", nargs="+", help="checkpoints or published variants (name@version) of one architecture"
    )
    so.add_argument("--out", type=Path, required=True, help="the soup's checkpoint (publish it as any other)")
    so.add_argument("--flip-fusion", action="store_true", help="score as published with --flip-fusion")
    so.add_argument("--threads", type=positive_int, default=2)
    so.add_argument("--val-fraction", type=float, default=0.1, help="held-out identities, as in training")
    add_data_argument(so)
    so.set_defaults(handler=cmd_soup)


def _train_arguments(tr: argparse.ArgumentParser) -> None:
    from pruning.train import TrainConfig

    def default(name: str) -> object:
        return default_of(TrainConfig, name)

    tr.add_argument("--run-dir", type=Path, required=True, help="checkpoints and curves; rerun to resume")
    add_data_argument(tr)
    tr.add_argument("--source", nargs="+", help="crop caches to train on (default: all with teacher files)")
    tr.add_argument("--epochs", type=int, default=default("epochs"))
    tr.add_argument("--batch-size", type=int, default=default("batch_size"))
    tr.add_argument("--lr", type=float, default=default("lr"))
    tr.add_argument("--threads", type=positive_int, default=default("threads"))
    tr.add_argument(
        "--init",
        "--from",
        dest="init",
        help="start from these weights (a new schedule): a checkpoint or a published variant (name@version)",
    )
    tr.add_argument(
        "--teacher",
        choices=("sface", "dlib"),
        default=default("teacher"),
        help="whose cached descriptors are targets",
    )
    tr.add_argument(
        "--refit-head",
        type=int,
        default=default("refit_head"),
        metavar="N",
        help="with --init from another teacher's student: ridge-fit the embedding layer on N faces first",
    )
    tr.add_argument(
        "--family",
        help="architecture of a fresh student: squeezefacenet (default), mobilenetv2 or resnet50",
    )
    tr.add_argument(
        "--identity-pairs",
        type=int,
        default=default("identity_pairs"),
        metavar="K",
        help="K same-identity pairs of labelled faces in every batch, held together by a margin term",
    )
    tr.add_argument("--identity-weight", type=float, default=default("identity_weight"))
    tr.add_argument("--identity-margin", type=float, default=default("identity_margin"))
    tr.add_argument(
        "--bank-weight",
        type=float,
        default=default("bank_weight"),
        help="weight of the relational term over every training face's teacher target (SEED-style KL)",
    )
    tr.add_argument("--bank-temperature", type=float, default=default("bank_temperature"))
    tr.add_argument(
        "--pose-weight",
        type=float,
        default=default("pose_weight"),
        help="side views count 1 + W times in the distillation terms (frontal faces once)",
    )
    tr.add_argument("--max-steps", type=int, default=default("max_steps"))
    tr.add_argument("--val-every", type=int, default=default("val_every"))
    tr.add_argument("--seed", type=int, default=default("seed"))
    tr.add_argument(
        "--pooling",
        choices=("gap", "gdc"),
        default=default("pooling"),
        help="embedding pooling (default: the --init network's, else gap); gdc converts a gap --init as is",
    )
    # TrainConfig.compile is True: the flag turns it off
    tr.add_argument("--no-compile", action="store_true", help="eager PyTorch: no compile, ~30 %% slower")
    tr.add_argument(
        "--bf16", action="store_true", help="bf16 autocast of the forward (2x faster on some CPUs)"
    )


def _prune_arguments(pr: argparse.ArgumentParser) -> None:
    from pruning.prune import PruneConfig

    def default(name: str) -> object:
        return default_of(PruneConfig, name)

    pr.add_argument("checkpoint", type=Path, nargs="?", help="the dense model checkpoint")
    pr.add_argument(
        "--from", dest="from_variant", metavar="VARIANT", help="or a published variant (name@version, alias)"
    )
    pr.add_argument("--run-dir", type=Path, required=True)
    add_data_argument(pr)
    pr.add_argument(
        "--criterion",
        default=default("criterion"),
        help="taylor | taylor_weight | taylor_weight_sum_sq | l1 | random",
    )
    pr.add_argument("--pruning-ratio", type=float, default=default("pruning_ratio"))
    pr.add_argument("--iterative-steps", type=int, default=default("iterative_steps"))
    pr.add_argument("--levels", type=float, nargs="+", default=list(default_of(PruneConfig, "levels")))
    pr.add_argument("--importance-batches", type=int, default=default("importance_batches"))
    pr.add_argument("--finetune-steps", type=int, default=default("finetune_steps"))
    pr.add_argument("--final-finetune-steps", type=int, default=default("final_finetune_steps"))
    pr.add_argument("--batch-size", type=int, default=default("batch_size"))
    pr.add_argument("--lr", type=float, default=default("lr"), help="peak learning rate of each fine-tuning")
    # unset: PruneConfig's (no ignored layers); given without names: none either
    pr.add_argument("--ignored-layers", nargs="*", help="layers that keep every filter (e.g. stem)")
    pr.add_argument(
        "--round-to",
        type=positive_int,
        default=default("round_to"),
        help="keep each thinned layer at a multiple of this many filters (16: faster on ONNX Runtime CPU)",
    )
    pr.add_argument("--threads", type=positive_int, default=default("threads"))
    pr.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 autocast of the fine-tuning forward (2x faster on some CPUs)",
    )
    pr.add_argument(
        "--val-fraction",
        type=float,
        default=default("val_fraction"),
        help="share of labelled identities held out",
    )
    pr.add_argument("--seed", type=int, default=default("seed"))
    pr.add_argument(
        "--publish-as",
        metavar="PREFIX",
        help="then export, measure and publish every level as PREFIX-XX (needs --pairs, --images-root)",
    )
    pr.add_argument("--parent", help="name@version of the dense model, recorded as each level's parent")
    pr.add_argument("--flip-fusion", action="store_true", help=FLIP_FUSION_HELP)
    pr.add_argument("--pairs", type=Path, help="LFW pairs.txt for --publish-as (benchmark only)")
    pr.add_argument("--images-root", type=Path)


def cmd_train(args: argparse.Namespace) -> int:
    from pruning.checkpoint import materialise
    from pruning.models import FAMILIES
    from pruning.train import train

    if args.family is not None and (args.init is not None or args.family not in FAMILIES):
        why = "--init brings its own architecture" if args.init else f"choose from {', '.join(FAMILIES)}"
        print(f"faceverify train: --family {args.family}: {why}", file=sys.stderr)
        return 2
    if args.pooling is not None and args.family not in (None, "squeezefacenet"):
        print(f"faceverify train: --pooling is a squeezefacenet option, not {args.family}'s", file=sys.stderr)
        return 2
    crops_root = data_root_of(args) / "crops"
    init = (
        materialise(args.init, args.run_dir, crops_root=crops_root, store_root=args.store)
        if args.init
        else None
    )
    config = train_config(args, crops_root=crops_root, init=init)
    best = train(config)
    print(json.dumps({"best": str(best), "run_dir": str(args.run_dir)}))
    return 0


def cmd_soup(args: argparse.Namespace) -> int:
    import torch

    from pruning.checkpoint import materialise
    from pruning.data.faceset import load_validation
    from pruning.soup import soup_checkpoints, validation_scorer

    torch.set_num_threads(args.threads)
    crops_root = data_root_of(args) / "crops"
    scratch = args.out.parent / f"{args.out.stem}-candidates"
    paths = {
        spec: materialise(spec, scratch, crops_root=crops_root, store_root=args.store)
        for spec in args.candidates
    }
    val = load_validation(crops_root, fraction=args.val_fraction)
    result = soup_checkpoints(
        paths, validation_scorer(val.crops, val.identity, flip_fusion=args.flip_fusion), args.out
    )
    print(json.dumps(result.record(), indent=2))
    return 0


def train_config(args: argparse.Namespace, *, crops_root: Path, init: Path | None) -> TrainConfig:
    """The ``TrainConfig`` the parsed ``faceverify train`` flags ask for (flags left unset: its defaults)."""
    from pruning.train import TrainConfig

    return TrainConfig(
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
        bf16=args.bf16,
        val_every=args.val_every,
        seed=args.seed,
        pooling=args.pooling,
        refit_head=args.refit_head,
        identity_pairs=args.identity_pairs,
        identity_weight=args.identity_weight,
        identity_margin=args.identity_margin,
        bank_weight=args.bank_weight,
        bank_temperature=args.bank_temperature,
        pose_weight=args.pose_weight,
        arch={"family": args.family} if args.family else {},
    )


def cmd_prune(args: argparse.Namespace) -> int:
    from pruning.prune import prune

    if args.publish_as and (args.pairs is None or args.images_root is None):
        print("faceverify prune: --publish-as needs --pairs and --images-root", file=sys.stderr)
        return 2  # before the run, not after half an hour of it
    from pruning.checkpoint import materialise

    if (args.checkpoint is None) == (args.from_variant is None):
        print("faceverify prune: give a CHECKPOINT or --from VARIANT (one of them)", file=sys.stderr)
        return 2
    crops_root = data_root_of(args) / "crops"
    dense = materialise(
        args.checkpoint or args.from_variant, args.run_dir, crops_root=crops_root, store_root=args.store
    )
    config = prune_config(args, checkpoint=dense, crops_root=crops_root)
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


def prune_config(args: argparse.Namespace, *, checkpoint: Path, crops_root: Path) -> PruneConfig:
    """The ``PruneConfig`` the parsed ``faceverify prune`` flags ask for (flags left unset: its defaults)."""
    from pruning.prune import PruneConfig

    return PruneConfig(
        run_dir=args.run_dir,
        checkpoint=checkpoint,
        crops_root=crops_root,
        criterion=args.criterion,
        pruning_ratio=args.pruning_ratio,
        iterative_steps=args.iterative_steps,
        levels=tuple(args.levels),
        importance_batches=args.importance_batches,
        finetune_steps=args.finetune_steps,
        final_finetune_steps=args.final_finetune_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        ignored_layers=args.ignored_layers or [],
        round_to=args.round_to,
        threads=args.threads,
        val_fraction=args.val_fraction,
        seed=args.seed,
        bf16=args.bf16,
    )
