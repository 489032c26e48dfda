"""Weight averaging of checkpoints fine-tuned from one parent: "model soups".

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves accuracy without
increasing inference time" (https://arxiv.org/abs/2203.05482). Runs restarted from the same parent stay in one
basin of the loss, so the mean of their weights is a network of the same architecture and cost that is often
better than any one of them. The *greedy* soup takes candidates best first and keeps each only if the
validation score of the average does not drop, so a candidate that left the basin is never mixed in.
Scored on the held-out validation identities (never LFW), the way the trainer picks checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pruning.calibrate import calibrate
from pruning.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, torch_embed_fn
from pruning.export import EmbeddingGraph
from pruning.models import FaceEmbedder
from pruning.train import validation_score


class IncompatibleSoup(ValueError):
    """Candidates whose parameters do not line up (another family, or other pruned widths)."""


def average_weights(models: Sequence[FaceEmbedder]) -> FaceEmbedder:
    """A copy of ``models[0]`` holding the element-wise mean of every floating-point tensor of the models
    (batch-norm running statistics included; integer counters are the first model's)."""
    states = [m.state_dict() for m in models]
    reference = states[0]
    shapes = {k: tuple(v.shape) for k, v in reference.items()}
    if any({k: tuple(v.shape) for k, v in state.items()} != shapes for state in states[1:]):
        raise IncompatibleSoup("soup candidates must share one architecture and the same widths")
    averaged = {
        name: torch.stack([s[name] for s in states]).mean(0) if tensor.is_floating_point() else tensor
        for name, tensor in reference.items()
    }
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(averaged)
    return soup.eval()


def validation_scorer(
    crops: np.ndarray, identity: np.ndarray, *, flip_fusion: bool = False
) -> Callable[[FaceEmbedder], float]:
    """The trainer's checkpoint score (TAR at FMR 1e-3) of a network on held-out crops, through the graph a
    publish would export (``flip_fusion`` as published)."""

    def score(model: FaceEmbedder) -> float:
        embed = torch_embed_fn(EmbeddingGraph(model.eval(), flip_fusion).eval())  # type: ignore[arg-type]
        return validation_score(calibrate(embed(crops), identity))

    return score


@dataclass(frozen=True)
class SoupTrial:
    candidate: str
    alone: float  # the candidate's own validation score
    soup: float | None  # the soup's score with it added (None for the first, best candidate)
    kept: bool


@dataclass(frozen=True)
class SoupResult:
    model: FaceEmbedder
    members: list[str]
    score: float
    trials: list[SoupTrial]

    def record(self) -> dict[str, object]:
        """What the soup's checkpoint keeps about how it was made."""
        return {
            "method": "greedy",
            "members": self.members,
            "score": self.score,
            "trials": [asdict(t) for t in self.trials],
        }


def greedy_soup(candidates: dict[str, FaceEmbedder], score: Callable[[FaceEmbedder], float]) -> SoupResult:
    """Wortsman et al.'s greedy soup: best candidate first, then each next one kept if the average of the kept
    ones and it scores at least as well as without it."""
    alone = {name: score(model) for name, model in candidates.items()}
    order = sorted(alone, key=lambda name: -alone[name])
    members, best = [order[0]], alone[order[0]]
    model = average_weights([candidates[order[0]]])  # a copy: the candidates stay as they are
    trials = [SoupTrial(order[0], alone[order[0]], None, True)]
    for name in order[1:]:
        mixed = average_weights([candidates[m] for m in [*members, name]])
        trial = score(mixed)
        kept = trial >= best
        trials.append(SoupTrial(name, alone[name], trial, kept))
        if kept:
            members.append(name)
            model, best = mixed, trial
    return SoupResult(model, members, best, trials)


def save_soup(path: Path, result: SoupResult, first: Checkpoint) -> Checkpoint:
    """The soup as a checkpoint: the first member's records (teacher, target space, data, lineage of a pruned
    level) and the soup's own."""
    meta = copy.deepcopy(first.meta)
    meta.soup = result.record()
    return save_checkpoint(path, result.model, meta=meta, **first.lineage)


def soup_checkpoints(paths: dict[str, Path], score: Callable[[FaceEmbedder], float], out: Path) -> SoupResult:
    """Load ``paths`` (label → checkpoint), cook the greedy soup, and write it to ``out``."""
    loaded = {name: load_checkpoint(path) for name, path in paths.items()}
    result = greedy_soup({name: model for name, (model, _) in loaded.items()}, score)
    save_soup(out, result, loaded[result.members[0]][1])
    return result
