"""Filter surgery: physically remove filters and every weight that consumed them.

Torch-Pruning (Fang et al. 2023, https://arxiv.org/abs/2301.12900) does the dependency bookkeeping: a conv's
output channels, its batch norm, the concatenation offsets of a Fire module's two expands, the next squeeze's
input channels and the embedding's input features. We checked it on our Fire modules: a pruned network's
output equals the unpruned one with those filters' outputs zeroed (tests/test_pruning.py).
Afterwards the model's config is re-read from the module shapes, so (config, state dict) reloads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from pruning.models import SqueezeFaceNet, SqueezeFaceNetConfig


def prunable_layers(model: SqueezeFaceNet) -> dict[str, nn.Sequential]:
    """Every conv → BN → ReLU block whose filters may go, by a stable name. The embedding never does."""
    layers: dict[str, nn.Sequential] = {"stem": model.stem}
    for index, fire in enumerate(model.fires):
        number = index + 2  # SqueezeNet numbers its Fire modules from 2
        layers[f"fire{number}.squeeze"] = fire.squeeze
        layers[f"fire{number}.expand1"] = fire.expand1
        layers[f"fire{number}.expand3"] = fire.expand3
    layers["head"] = model.head
    return layers


def filter_counts(model: SqueezeFaceNet) -> dict[str, int]:
    return {name: block[0].out_channels for name, block in prunable_layers(model).items()}


def sync_config(model: SqueezeFaceNet) -> SqueezeFaceNetConfig:
    """Re-read every width from the modules after surgery."""
    config = model.config
    config.stem = model.stem[0].out_channels
    config.fires = [
        (f.squeeze[0].out_channels, f.expand1[0].out_channels, f.expand3[0].out_channels) for f in model.fires
    ]
    config.head = model.head[0].out_channels
    return config


def remove_filters(model: SqueezeFaceNet, plan: Mapping[str, Sequence[int]]) -> SqueezeFaceNet:
    """Remove ``plan[layer] = filter indices`` (indices of the current model) in place; returns the model."""
    layers = prunable_layers(model)
    was_training = model.training
    model.eval()
    example = torch.zeros(1, 3, 112, 112)
    # No ignored_layers: ignoring the embedding would also stop its *input* features from following the
    # head's removed filters. Its 128 outputs are safe because groups are only ever rooted at conv outputs.
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    for name, indices in plan.items():
        indices = sorted({int(i) for i in indices})
        if not indices:
            continue
        conv = layers[name][0]
        if len(indices) >= conv.out_channels:
            raise ValueError(f"cannot remove every filter of {name}")
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=indices)
        group.prune()
    sync_config(model)
    model.train(was_training)
    return model
