"""ResNet-50 face embedder (bottleneck blocks), and its pruned descendants.

ResNet: He et al. 2016, https://arxiv.org/abs/1512.03385 (bottleneck: 1×1 reduce → 3×3 → 1×1 expand, plus
an identity or 1×1 projection shortcut, ReLU after the sum); stride on the 3×3 conv as in torchvision's
"ResNet v1.5". The comparative pruning study: Alonso-Fernandez et al. 2024, https://arxiv.org/abs/2405.18302
(ResNet50, 23.5M parameters).

Layout: torchvision's ``resnet50`` — stem 7×7/2 to 64 → 3×3/2 max-pool, then four stages of 3, 4, 6, 3
bottlenecks of widths 64, 128, 256, 512 (expanded ×4 to 256 … 2048), strides 1, 2, 2, 2. The blocks are
written here rather than taken from torchvision because torchvision ties both inner widths of a bottleneck to
one ``planes`` figure and its output to ``4 × planes``; a pruned network has a width per convolution, which
:class:`ResNet50FaceConfig` holds explicitly, so (config, state dict) reloads it.

Departures from the ImageNet network (also in the manifest's ``architecture`` record):
- input 112×112 (ArcFace template) with the ImageNet strides kept (stem stride 2 and the max-pool, total
  stride 32): the last feature map is 4×4, about 1.05 GMAC a face. A stride-1 stem (``stem_stride=1``) gives
  7×7 maps for 4× the FLOPs.
- head: the last stage's 2048 channels → global average pooling → linear 2048→128 → batch norm, instead of
  the 1000-way classifier: 23.77M parameters (the trunk is the paper's 23.5M).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from pruning.models.base import FaceEmbedder, ModelCard, conv_bn, init_weights

FAMILY = "resnet50"
PAPER = "https://arxiv.org/abs/1512.03385"
DEVIATION = (
    "112x112 input (ArcFace template) with the ImageNet strides (stem stride 2 + max-pool, 4x4 last feature "
    "map); head: global average pooling of the last stage's 2048 channels -> linear 2048->128 -> batch norm "
    "instead of the 1000-way classifier (23.77M parameters; the trunk is the paper's 23.5M)"
)
MODEL_CARD = ModelCard(FAMILY, PAPER, DEVIATION)

# (bottlenecks, inner width, first stride) per stage: He et al., table 1 (50-layer)
IMAGENET_STAGES: tuple[tuple[int, int, int], ...] = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
EXPANSION = 4


def block_table(
    stem: int = 64, stages: tuple[tuple[int, int, int], ...] = IMAGENET_STAGES
) -> list[tuple[int, int, int, int, bool]]:
    """Per bottleneck: (conv1 width, conv2 width, output width, stride, projection shortcut)."""
    blocks, channels = [], stem
    for count, width, stride in stages:
        for index in range(count):
            first = index == 0
            out = width * EXPANSION
            blocks.append((width, width, out, stride if first else 1, first or channels != out))
            channels = out
    return blocks


@dataclass
class ResNet50FaceConfig:
    stem: int = 64
    stem_stride: int = 2
    # (conv1, conv2, out, stride, projection shortcut) per bottleneck
    blocks: list[tuple[int, int, int, int, bool]] = field(default_factory=block_table)
    embedding_dim: int = 128
    dropout: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ResNet50FaceConfig:
        data = dict(data)
        data["blocks"] = [
            (int(a), int(b), int(c), int(s), bool(p))
            for a, b, c, s, p in data["blocks"]  # type: ignore[union-attr]
        ]
        return cls(**data)  # type: ignore[arg-type]


class Bottleneck(nn.Module):
    def __init__(
        self, in_ch: int, width1: int, width2: int, out_ch: int, stride: int, projection: bool
    ) -> None:
        super().__init__()
        if not projection and (stride != 1 or in_ch != out_ch):
            raise ValueError(f"an identity shortcut needs stride 1 and equal widths, not {in_ch}->{out_ch}")
        self.conv1 = conv_bn(in_ch, width1, 1)
        self.conv2 = conv_bn(width1, width2, 3, stride)
        self.conv3 = conv_bn(width2, out_ch, 1, activation=None)
        self.downsample = conv_bn(in_ch, out_ch, 1, stride, activation=None) if projection else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        # out of place: the Taylor hooks keep conv3's and the shortcut's outputs; the ReLU may reuse the sum
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet50Face(FaceEmbedder):
    family = FAMILY
    paper = PAPER
    deviation = DEVIATION

    def __init__(self, config: ResNet50FaceConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ResNet50FaceConfig()
        if not config.blocks or not config.blocks[0][4]:
            raise ValueError("the first bottleneck needs a projection shortcut (it starts the first stream)")
        self.stem = conv_bn(3, config.stem, 7, stride=config.stem_stride)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        channels = config.stem
        self.blocks = nn.ModuleList()
        for width1, width2, out_ch, stride, projection in config.blocks:
            self.blocks.append(Bottleneck(channels, width1, width2, out_ch, stride, projection))
            channels = out_ch
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.embedding = nn.Linear(channels, config.embedding_dim, bias=False)
        self.embedding_bn = nn.BatchNorm1d(config.embedding_dim)
        init_weights(self)

    def _stage_names(self) -> list[str]:
        """``layer{stage}.{index}`` per bottleneck, torchvision's numbering (a projection starts a stage)."""
        names, stage, index = [], 0, 0
        for block in self.blocks:
            if block.downsample is not None:
                stage, index = stage + 1, 0
            names.append(f"layer{stage}.{index}")
            index += 1
        return names

    def prunable_units(self) -> dict[str, list[nn.Sequential]]:
        """stem; conv1 and conv2 of every bottleneck; each stage's residual stream (its projection shortcut
        and every conv3 summed into it). The last stream is the embedding's input."""
        units: dict[str, list[nn.Sequential]] = {"stem": [self.stem]}
        stream = ""
        for name, block in zip(self._stage_names(), self.blocks, strict=True):
            units[f"{name}.conv1"] = [block.conv1]
            units[f"{name}.conv2"] = [block.conv2]
            if block.downsample is not None:
                stream = f"{name.split('.')[0]}.out"
                units[stream] = [block.downsample]
            units[stream].append(block.conv3)
        return units

    def sync_config(self) -> ResNet50FaceConfig:
        config = self.config
        config.stem = self.stem[0].out_channels
        config.blocks = [
            (
                block.conv1[0].out_channels,
                block.conv2[0].out_channels,
                block.conv3[0].out_channels,
                stride,
                block.downsample is not None,
            )
            for block, (_, _, _, stride, _) in zip(self.blocks, config.blocks, strict=True)
        ]
        return config

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding; callers L2-normalise (the ONNX export does it inside)."""
        x = torch.flatten(self.global_pool(self.features(x)), 1)
        return self.embedding_bn(self.embedding(self.dropout(x)))


def create_model(config: ResNet50FaceConfig | dict[str, object] | None = None) -> ResNet50Face:
    if isinstance(config, dict):
        config = ResNet50FaceConfig.from_dict(config)
    return ResNet50Face(config)
