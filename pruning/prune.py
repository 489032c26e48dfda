"""``faceverify prune``: iterative filter pruning with fine-tuning (the schedule).

Molchanov et al. 2017 (https://arxiv.org/abs/1611.06440), Algorithm: rank every filter → remove the
``filters_per_step`` lowest globally → fine-tune ``finetune_steps`` → repeat, ``iterative_steps`` times, until
``pruning_ratio`` of the prunable filters are gone. When the cumulative share removed reaches each level in
``levels``, the network is snapshotted and given ``final_finetune_steps`` more fine-tuning steps of its own.
Criteria, surgery and schedule live apart (``importance.py``, ``surgery.py``, here), as in Torch-Pruning.

Resumable: ``state.pt`` after every iteration (model, iteration, history), ``level-XX.pt`` per finished level.
``history.json`` records, per iteration, how many filters each layer lost.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pruning.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from pruning.importance import create_importance, lowest_filters
from pruning.models import FaceEmbedder, count_flops, count_params
from pruning.surgery import filter_counts, remove_filters
from pruning.train import DistillationData, distillation_loss, validate

if TYPE_CHECKING:
    from pruning.live import LiveData


@dataclass
class PruneConfig:
    run_dir: Path
    checkpoint: Path  # the dense model
    crops_root: Path
    criterion: str = "taylor"
    pruning_ratio: float = 0.5  # share of prunable filters removed by the last iteration
    iterative_steps: int = 10
    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
    importance_batches: int = 8
    finetune_steps: int = 100
    final_finetune_steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    min_keep_fraction: float = 0.1  # never thin a layer below this share of its original filters
    round_to: int = 1  # keep thinned layers at multiples of this (16: ORT's fast path, see lowest_filters)
    ignored_layers: list[str] = field(default_factory=list)
    sources: list[str] | None = None
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 2
    # bf16 autocast of the fine-tuning forward on the CPU (as TrainConfig.bf16: 2x on AVX512-BF16 machines).
    bf16: bool = False

    def to_json(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _loss(model: FaceEmbedder, batch: object, bf16: bool = False) -> torch.Tensor:
    x, targets = batch  # type: ignore[misc]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and x.device.type == "cpu"):
        embeddings = model(x)
    return distillation_loss(embeddings.float(), targets)[0]


def finetune(
    model: FaceEmbedder, data: DistillationData | LiveData, steps: int, config: PruneConfig, seed_step: int
) -> None:
    """Plain AdamW fine-tuning with a cosine decay over ``steps`` (a fresh optimiser: the shapes changed)."""
    if steps <= 0:
        return
    model.to(memory_format=torch.channels_last)  # surgery leaves fresh NCHW tensors behind
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=5e-4)
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = _loss(model, data.batch(seed_step + step, config.batch_size, config.seed), config.bf16)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def level_name(level: float) -> str:
    return f"level-{round(level * 100):02d}"


def prune(
    config: PruneConfig,
    progress: bool = True,
    *,
    data: DistillationData | LiveData | None = None,
    device: torch.device | None = None,
) -> dict[str, object]:
    """Run (or resume) the schedule. ``data``: batches from elsewhere (``pruning.live.LiveData``: a live
    teacher on an accelerator) instead of the crop cache's cached targets; ``device``: where the network
    trains (the surgery itself builds its new layers on the CPU, so the network is moved back after it)."""
    from tqdm import tqdm

    torch.set_num_threads(config.threads)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    dense, dense_checkpoint = load_checkpoint(config.checkpoint)
    target_mean = dense_checkpoint.meta.target_mean
    if data is None:
        data = DistillationData.load(
            config.crops_root,
            config.sources,
            config.val_fraction,
            target_mean,
            teacher=dense_checkpoint.meta.teacher,
        )
    device = device or torch.device("cpu")
    dense = dense.to(device)
    original = filter_counts(dense)
    total = prunable_filters(original, config.ignored_layers)
    per_step = filters_per_step(original, config.pruning_ratio, config.iterative_steps, config.ignored_layers)
    min_keep = min_keep_of(original, config.min_keep_fraction, config.ignored_layers)

    state_path = config.run_dir / "state.pt"
    if state_path.exists():
        model, state = load_checkpoint(state_path)
        model = model.to(device)
        if state.iteration is None or state.history is None:
            raise ValueError(f"{state_path} holds no pruning schedule state to resume from")
        iteration, history = state.iteration, list(state.history)
    else:
        model, iteration = copy.deepcopy(dense), 0
        history = [_describe(model, original, 0, {}, 0)]
    importance = create_importance(config.criterion, seed=config.seed)
    summary = {"config": config.to_json(), "original_filters": original, "prunable_filters": total}

    _snapshot_levels(model, data, history, config)  # a level interrupted before it was saved
    bar = tqdm(
        total=config.iterative_steps,
        initial=iteration,
        desc=f"prune {config.criterion}",
        disable=not progress,
    )
    while iteration < config.iterative_steps:
        iteration += 1
        step_base = iteration * 100_000  # distinct batches per iteration, reproducible on resume
        if importance.needs_data:
            importance = create_importance(config.criterion, seed=config.seed + iteration)
            batches = (
                data.batch(step_base - 1000 + b, config.batch_size, config.seed)
                for b in range(config.importance_batches)
            )
            importance.accumulate(model, _loss, batches)
        scores = importance.scores(model)
        plan = lowest_filters(
            scores, per_step, min_keep=_current_min_keep(model, min_keep), round_to=config.round_to
        )
        remove_filters(model.cpu(), plan)
        model.to(device)
        finetune(model, data, config.finetune_steps, config, step_base)
        removed = {k: len(v) for k, v in plan.items() if v}
        history.append(_describe(model, original, iteration, removed, total))
        save_checkpoint(state_path, model, iteration=iteration, history=history, config=config.to_json())
        (config.run_dir / "history.json").write_text(
            json.dumps(summary | {"history": history}, indent=2) + "\n"
        )
        bar.update()
        bar.set_postfix(removed=f"{history[-1]['removed_share']:.2f}", params=history[-1]["params"])
        _snapshot_levels(model, data, history, config)
    bar.close()
    return summary | {"history": history}


def filters_per_step(
    original: dict[str, int], pruning_ratio: float, iterative_steps: int, ignored_layers: Sequence[str] = ()
) -> int:
    """Filters each iteration removes (at least; ``round_to`` may add up to ``round_to - 1``)."""
    return math.ceil(pruning_ratio * prunable_filters(original, ignored_layers) / iterative_steps)


def prunable_filters(original: dict[str, int], ignored_layers: Sequence[str] = ()) -> int:
    """Filters the schedule may remove from: every unit's but the ignored ones'."""
    return sum(v for k, v in original.items() if k not in ignored_layers)


def min_keep_of(
    original: dict[str, int], min_keep_fraction: float, ignored_layers: Sequence[str] = ()
) -> dict[str, int]:
    """The fewest filters each unit keeps: a share of its original width; ignored units keep them all."""
    keep = {k: max(1, math.ceil(min_keep_fraction * v)) for k, v in original.items()}
    return keep | {name: original[name] for name in ignored_layers}


def _current_min_keep(model: FaceEmbedder, min_keep: dict[str, int]) -> dict[str, int]:
    return {name: min(min_keep[name], count) for name, count in filter_counts(model).items()}


SIZE_KEYS = ("filters", "params", "flops")


def size_record(model: FaceEmbedder) -> dict[str, object]:
    """Filters per prunable layer, parameters and FLOPs: what a level is compared with its dense model by."""
    return {"filters": filter_counts(model), "params": count_params(model), "flops": count_flops(model)}


def _describe(
    model: FaceEmbedder, original: dict[str, int], iteration: int, removed: dict[str, int], total: int
) -> dict[str, object]:
    size = size_record(model)
    gone = sum(original[k] - size["filters"][k] for k in original)  # type: ignore[index]
    return {
        "iteration": iteration,
        "removed_this_step": removed,
        "removed_share": gone / total if total else 0.0,
        **size,
    }


def _reached_at(history: list[dict[str, object]], level: float) -> int | None:
    """The first iteration whose cumulative share removed reaches ``level`` (None: not yet)."""
    for record in history:
        if float(record["removed_share"]) + 1e-9 >= level:  # type: ignore[arg-type]
            return int(record["iteration"])  # type: ignore[call-overload]
    return None


def _snapshot_levels(
    model: FaceEmbedder,
    data: DistillationData | LiveData,
    history: list[dict[str, object]],
    config: PruneConfig,
) -> None:
    """Finish every level first reached by the current iteration (``history[-1]``) that has no checkpoint.

    A level is always taken at the iteration that first reaches it, so a run interrupted between saving
    ``state.pt`` and finishing a level completes that level on resume, from the same network; a level whose
    iteration has passed without a checkpoint cannot be recreated and stops the run.
    """
    record = history[-1]
    for level in config.levels:
        path = config.run_dir / f"{level_name(level)}.pt"
        reached = _reached_at(history, level)
        if path.exists() or reached is None:
            continue
        if reached != record["iteration"]:
            raise RuntimeError(
                f"{path.name} is missing but its iteration ({reached}) has passed; "
                "rerun the schedule in a fresh --run-dir"
            )
        snapshot = copy.deepcopy(model)
        step_base = int(record["iteration"]) * 100_000  # type: ignore[call-overload]
        finetune(snapshot, data, config.final_finetune_steps, config, step_base + 50_000)
        metrics = validate(snapshot, data.val)
        save_checkpoint(
            path,
            snapshot,
            level=level,
            criterion=config.criterion,
            val=metrics,
            record=record,
            dense={k: history[0][k] for k in SIZE_KEYS},
            meta=CheckpointMeta(
                config={"teacher": data.teacher},
                target_mean=data.target_mean.tolist(),
                prune_config=config.to_json(),
            ),
        )
