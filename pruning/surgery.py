"""Filter surgery: physically remove filters and every weight that consumed them.

Torch-Pruning (Fang et al. 2023, https://arxiv.org/abs/2301.12900) does the dependency bookkeeping: a conv's
output channels, its batch norm, the concatenation offsets of a Fire module's two expands, a depthwise conv
fed by the pruned conv (its groups shrink with it), every conv summed into the same residual stream, the next
convs' input channels and the embedding's input features. A unit (``FaceEmbedder.prunable_units``) names the
convs Torch-Pruning must thin together; after each removal the unit's members are checked to have lost the
same filters. Tests (tests/test_pruning.py, tests/test_pruning_families.py): a pruned network's output
equals the unpruned one with those filters' outputs zeroed, for every block type of every family.
Afterwards the model's config is re-read from the module shapes, so (config, state dict) reloads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from pruning.models import INPUT_CARD, FaceEmbedder


def prunable_units(model: FaceEmbedder) -> dict[str, list[nn.Sequential]]:
    """Every unit whose filters may go, by a stable name (see ``FaceEmbedder.prunable_units``)."""
    return model.prunable_units()


def prunable_layers(model: FaceEmbedder) -> dict[str, nn.Sequential]:
    """The first member (conv → BN → …) of every unit; the unit's root for Torch-Pruning."""
    return {name: members[0] for name, members in prunable_units(model).items()}


def filter_counts(model: FaceEmbedder) -> dict[str, int]:
    return {name: block[0].out_channels for name, block in prunable_layers(model).items()}


def sync_config(model: FaceEmbedder) -> object:
    """Re-read every width from the modules after surgery."""
    return model.sync_config()


def remove_filters(model: FaceEmbedder, plan: Mapping[str, Sequence[int]]) -> FaceEmbedder:
    """Remove ``plan[unit] = filter indices`` (indices of the current model) in place; returns the model."""
    units = prunable_units(model)
    was_training = model.training
    model.eval()
    example = torch.zeros(1, 3, *INPUT_CARD.input_size)
    # No ignored_layers: ignoring the embedding would also stop its *input* features from following the
    # head's removed filters. Its 128 outputs are safe because groups are only ever rooted at conv outputs.
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    for name, indices in plan.items():
        indices = sorted({int(i) for i in indices})
        if not indices:
            continue
        members = units[name]
        width = members[0][0].out_channels
        if len(indices) >= width:
            raise ValueError(f"cannot remove every filter of {name}")
        group = graph.get_pruning_group(members[0][0], tp.prune_conv_out_channels, idxs=indices)
        group.prune()
        widths = {block[0].out_channels for block in members} | {block[1].num_features for block in members}
        if widths != {width - len(indices)}:
            raise RuntimeError(f"Torch-Pruning left {name}'s coupled convs at widths {sorted(widths)}")
    sync_config(model)
    model.train(was_training)
    return model
