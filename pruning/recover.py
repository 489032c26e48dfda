"""Trainable PyTorch weights from a published one-pass SqueezeFaceNet ONNX graph.

Variants published before the store kept PyTorch weights (``weights.pt`` beside the ONNX) exist only as ONNX,
whose exporter folded every batch norm into the convolution before it (and the embedding's into the Gemm).
The folded graph computes ``y + b`` with ``y = W_folded * x``. To train on, each batch norm is rebuilt so
that, with the statistics ``m, s`` of ``y`` measured on real crops, ``γ = s``, ``β = m + b``, running mean
``m`` and running variance ``s² - ε``: in eval mode it returns exactly ``y + b`` (the ONNX output), and in
training mode, where it normalises with batch statistics close to ``m, s``, it starts close to that.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from faces.tensor import crops_to_tensor
from pruning.models import INPUT_CARD, SqueezeFaceNet, create_model

_EXPORT_PREFIX = "model."  # the export wraps the network (pruning.export.EmbeddingGraph)


def _pairs(model: SqueezeFaceNet) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, linear-or-conv, following batch norm) in the network's order."""
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential) and isinstance(module[0], nn.Conv2d):
            pairs.append((f"{name}.0", module[0], module[1]))
    pairs.append(("embedding", model.embedding, model.embedding_bn))
    return pairs


def model_from_onnx(onnx_bytes: bytes, config: dict[str, object] | None, crops: np.ndarray) -> SqueezeFaceNet:
    """The network of ``config`` (None: dense default) with the graph's weights, norms rebuilt on ``crops``.

    ``crops``: (N, 112, 112, 3) uint8 aligned faces (a few hundred; never benchmark faces). Raises
    ``ValueError`` for a graph that is not a one-pass export of this architecture (e.g. flip-fused).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    model = create_model(config)
    if getattr(model.config, "pooling", "gap") != "gap":
        raise ValueError("only GAP networks can be rebuilt from a folded graph")
    pairs = _pairs(model)
    with torch.no_grad():
        for name, layer, norm in pairs:
            key = f"{_EXPORT_PREFIX}{name}.weight"
            if key not in weights or f"{key}_bias" not in weights:
                raise ValueError(f"the graph has no folded weights for {name} (not a one-pass export?)")
            weight = torch.from_numpy(weights[key].copy())
            if weight.shape != layer.weight.shape:
                raise ValueError(f"{name}: graph {tuple(weight.shape)} vs config {tuple(layer.weight.shape)}")
            layer.weight.copy_(weight)
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(weights[f"{key}_bias"].copy()))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)

    # Statistics of each layer's pre-bias output on real crops; the network is exact (eval) throughout.
    sums: dict[str, list[torch.Tensor]] = {name: [] for name, _, _ in pairs}
    hooks = []
    for name, layer, _ in pairs:

        def record(_module: nn.Module, _inputs: object, output: torch.Tensor, name: str = name) -> None:
            dims = (0, 2, 3) if output.ndim == 4 else (0,)
            sums[name].append(torch.stack([output.mean(dims), (output**2).mean(dims)]))

        hooks.append(layer.register_forward_hook(record))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(crops), 64):
            x = crops_to_tensor(crops[start : start + 64], INPUT_CARD.mean, INPUT_CARD.std)
            model(torch.from_numpy(x))
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for name, _, norm in pairs:
            first, second = torch.stack(sums[name]).mean(0)
            std = (second - first**2).clamp_min(1e-4).sqrt()  # any std > sqrt(eps) keeps eval exact
            norm.weight.copy_(std)
            norm.bias.add_(first)
            norm.running_mean.copy_(first)
            norm.running_var.copy_(std**2 - norm.eps)
    return model
