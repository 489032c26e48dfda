"""Filter importance criteria, all with one interface: accumulate over mini-batches, then ``scores()``.

- Taylor, activation form — Molchanov et al. 2017, "Pruning Convolutional Neural Networks for Resource
  Efficient Inference", https://arxiv.org/abs/1611.06440: per feature map, |mean over positions of
  activation × ∂loss/∂activation| per example, averaged over examples, then ℓ2-normalised within each layer.
- Taylor, weight form — Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning",
  https://arxiv.org/abs/1906.10771: first-order change in loss from zeroing a filter's parameters,
  (Σ_s w_s·g_s)² over the filter's conv weights and its batch-norm scale and shift ("group" form, the paper's
  eq. 8); ``weight_sum_sq`` is the per-parameter sum Σ_s (w_s·g_s)² (eq. 7 summed over the filter).
- Baselines: ℓ1 norm of the filter's weights (Li et al. 2017, https://arxiv.org/abs/1608.08710) and random.

A unit of coupled convolutions (a depthwise conv with the conv feeding it, every conv summed into one
residual stream; see pruning/surgery.py) is scored as one filter per channel: the activation form sums the
members' a·∂L/∂a per example before the absolute value — the first-order change in loss from zeroing that
channel in every member at once — and the weight forms and ℓ1 take the members' parameters together.

The loss is the caller's: in this project, the distillation fine-tuning loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

from pruning.models import FaceEmbedder
from pruning.surgery import prunable_units

LossFn = Callable[[FaceEmbedder, object], torch.Tensor]


def normalise_per_layer(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layer-wise ℓ2 normalisation (Molchanov 2017, sec. 2.2) so layers of different depth compare."""
    return {name: s / (s.norm() + 1e-12) for name, s in scores.items()}


class Importance:
    name: str = "importance"
    needs_data: bool = True

    def accumulate(self, model: FaceEmbedder, loss_fn: LossFn, batches: Iterable[object]) -> None:
        """Feed mini-batches (a no-op for data-free criteria)."""

    def scores(self, model: FaceEmbedder) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class TaylorImportance(Importance):
    def __init__(self, form: Literal["activation", "weight", "weight_sum_sq"] = "activation") -> None:
        self.form = form
        self.name = f"taylor_{form}"
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def accumulate(self, model: FaceEmbedder, loss_fn: LossFn, batches: Iterable[object]) -> None:
        units = prunable_units(model)
        was_training = model.training
        model.train()  # the fine-tuning regime the scores describe
        for batch in batches:
            captured: dict[str, torch.Tensor] = {}
            handles = []
            if self.form == "activation":
                for name, members in units.items():
                    for block in members:
                        handles.append(block.register_forward_hook(self._capture(name, captured)))
            model.zero_grad(set_to_none=True)
            try:
                loss = loss_fn(model, batch)
                loss.backward()
            finally:
                for handle in handles:
                    handle.remove()
            for name, members in units.items():
                contribution = self._contribution(members, captured.get(name))
                self._sums[name] = self._sums.get(name, 0) + contribution.detach()
            self._count += 1
        model.zero_grad(set_to_none=True)
        model.train(was_training)

    @staticmethod
    def _capture(name: str, captured: dict[str, torch.Tensor]):
        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            # The gradient hook must not close over ``output`` itself: output → its hook → output is a cycle
            # through autograd's C++ objects that Python's collector cannot see, so every batch's activations
            # leaked (≈1.5 GB an iteration on MobileNetV2, an OOM kill for ResNet-50 by the third).
            activation = output.detach()

            def keep_grad(grad: torch.Tensor) -> None:
                # per example and channel: mean over positions of a·∂L/∂a, summed over the unit's members
                signed = (activation * grad).mean(dim=(2, 3))
                captured[name] = captured[name] + signed if name in captured else signed

            output.register_hook(keep_grad)

        return hook

    def _contribution(self, members: list[nn.Sequential], signed: torch.Tensor | None) -> torch.Tensor:
        if self.form == "activation":
            assert signed is not None, "no gradient reached this unit"
            return signed.abs().mean(dim=0)  # |per-example first-order change|, averaged over the batch
        per_param = []
        for block in members:
            conv, bn = block[0], block[1]
            per_param += [
                (conv.weight * conv.weight.grad).flatten(1),
                (bn.weight * bn.weight.grad)[:, None],
                (bn.bias * bn.bias.grad)[:, None],
            ]
        stacked = torch.cat(per_param, dim=1)
        if self.form == "weight":
            return stacked.sum(dim=1) ** 2
        return (stacked**2).sum(dim=1)

    def scores(self, model: FaceEmbedder) -> dict[str, torch.Tensor]:
        if not self._count:
            raise RuntimeError("accumulate() at least one batch first")
        return normalise_per_layer({name: s / self._count for name, s in self._sums.items()})


class MagnitudeImportance(Importance):
    name = "l1"
    needs_data = False

    def scores(self, model: FaceEmbedder) -> dict[str, torch.Tensor]:
        return normalise_per_layer(
            {
                name: sum(block[0].weight.detach().abs().flatten(1).sum(dim=1) for block in members)
                for name, members in prunable_units(model).items()
            }
        )


class RandomImportance(Importance):
    name = "random"
    needs_data = False

    def __init__(self, seed: int = 0) -> None:
        self._generator = torch.Generator().manual_seed(seed)

    def scores(self, model: FaceEmbedder) -> dict[str, torch.Tensor]:
        return {
            name: torch.rand(members[0][0].out_channels, generator=self._generator)
            for name, members in prunable_units(model).items()
        }


def create_importance(criterion: str, seed: int = 0) -> Importance:
    factories: dict[str, Callable[[], Importance]] = {
        "taylor": lambda: TaylorImportance("activation"),
        "taylor_weight": lambda: TaylorImportance("weight"),
        "taylor_weight_sum_sq": lambda: TaylorImportance("weight_sum_sq"),
        "l1": MagnitudeImportance,
        "random": lambda: RandomImportance(seed),
    }
    if criterion not in factories:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(factories)}")
    return factories[criterion]()


def lowest_filters(
    scores: dict[str, torch.Tensor], count: int, *, min_keep: dict[str, int], round_to: int = 1
) -> dict[str, list[int]]:
    """The ``count`` globally lowest-scored filters, never leaving a layer under ``min_keep[layer]``.

    ``round_to`` > 1 (Torch-Pruning's name) keeps every thinned layer at a multiple of it: ONNX Runtime's CPU
    kernels lose up to a third of their speed on unaligned channel counts (reports/channel_alignment.md).
    Each layer then gives up its lowest filters in whole multiples, so a step removes at least ``count``
    and at most ``count + round_to - 1`` filters.
    """
    ranked = sorted(
        ((float(score), name, index) for name, s in scores.items() for index, score in enumerate(s.tolist())),
    )
    chosen: dict[str, list[int]] = {name: [] for name in scores}  # in rank order, lowest first

    def removable(name: str) -> int:
        """How many of the chosen filters the layer can give up and stay a multiple of ``round_to``."""
        size = len(scores[name])
        keep = size - len(chosen[name])
        return size - min(size, round_to * math.ceil(keep / round_to))

    total = 0
    for _, name, index in ranked:
        if total >= count:
            break
        if len(scores[name]) - len(chosen[name]) <= min_keep[name]:
            continue
        before = removable(name)
        chosen[name].append(index)
        total += removable(name) - before
    return {name: indices[: removable(name)] for name, indices in chosen.items()}
