"""What every face embedder family shares: the input card, the prunable-unit interface, the conv blocks.

All families take the same 112×112 ArcFace-aligned crop with the same normalisation and give a 128-D
embedding from the same kind of head (last 1×1 convolution → pooling → linear → batch norm), so the serving
stack, the harness, the exporter and the pruning schedule treat them alike.

A *prunable unit* is a set of convolutions whose output channels are one filter each and must go together:
a single convolution in SqueezeNet, but a depthwise convolution together with the convolution that feeds it
(MobileNetV2) and all the convolutions summed into one residual stream (MobileNetV2, ResNet-50). Each member
is a ``Sequential(conv, bn[, activation])`` whose output is the filter's feature map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn


@dataclass(frozen=True)
class InputCard:
    """What a network takes and gives: the preprocessing that travels with it into every manifest."""

    input_size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    alignment_template: str = "arcface_112"
    embedding_dim: int = 128


# Identical for every family (the serving stack keeps one preprocessing path).
INPUT_CARD = InputCard()


@dataclass(frozen=True)
class ModelCard:
    """A family's metadata, timm style: the paper it follows, how it departs from it, and its input card."""

    family: str
    paper: str
    deviation: str
    input: InputCard = field(default=INPUT_CARD)


class FaceEmbedder(nn.Module):
    """Base of the embedder families: ``config`` holds every width, so (config, state dict) reloads it."""

    family: ClassVar[str]
    paper: ClassVar[str]
    deviation: ClassVar[str]
    config: object
    embedding: nn.Linear

    def prunable_units(self) -> dict[str, list[nn.Sequential]]:
        """Every unit whose filters may go, by a stable name; members coupled output channel by channel."""
        raise NotImplementedError

    def sync_config(self) -> object:
        """Re-read every width from the modules (after surgery) into ``config``; returns it."""
        raise NotImplementedError

    def architecture_record(self) -> dict[str, object]:
        """What a manifest says about the network: family, paper, departure from it, widths."""
        return {
            "family": self.family,
            "paper": self.paper,
            "deviation": self.deviation,
            "config": self.config.to_dict(),  # type: ignore[attr-defined]
        }


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """conv (no bias) → batch norm [→ activation]: one prunable member."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


def init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
