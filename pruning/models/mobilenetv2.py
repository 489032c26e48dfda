"""MobileNetV2 face embedder (width 1.0), and its pruned descendants.

MobileNetV2: Sandler et al. 2018, https://arxiv.org/abs/1801.04381 (inverted residual: 1×1 expansion →
3×3 depthwise → linear 1×1 projection, with an identity shortcut when stride is 1 and widths match).
The comparative pruning study: Alonso-Fernandez et al. 2024, "Deep Network Pruning: A Comparative Study on
CNNs in Face Recognition", https://arxiv.org/abs/2405.18302 (MobileNetv2, 3.5M parameters).

Layout: torchvision's ``mobilenet_v2`` block table at width 1.0 — stem 3×3/2 to 32, then (t, c, n, s) =
(1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), and the last 1×1 conv to 1280.
The blocks are written here rather than taken from torchvision because torchvision derives every hidden width
from ``expand_ratio × input``; a pruned network has arbitrary widths per block, which
:class:`MobileNetV2FaceConfig` holds explicitly, so (config, state dict) reloads it.

Departures from the ImageNet network (also in the manifest's ``architecture`` record):
- input 112×112 (ArcFace template) with the ImageNet strides kept (stem stride 2, total stride 32): the last
  feature map is 4×4. A stride-1 stem (``stem_stride=1``) gives 7×7 maps for 4× the FLOPs.
- head: the last 1×1 conv (1280, ReLU6) → global average pooling → linear 1280→128 → batch norm, instead of
  the 1000-way classifier. 2.39M parameters; the paper's 3.5M is the ImageNet count, which includes the
  1.28M of the classifier (the trunk is 2.22M in both).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from pruning.models.base import FaceEmbedder, ModelCard, conv_bn, init_weights

FAMILY = "mobilenetv2"
PAPER = "https://arxiv.org/abs/1801.04381"
DEVIATION = (
    "112x112 input (ArcFace template) with the ImageNet strides (stem stride 2, 4x4 last feature map); "
    "head: last 1x1 conv (1280) -> global average pooling -> linear 1280->128 -> batch norm instead of the "
    "1000-way classifier (2.39M parameters; the paper's 3.5M includes the ImageNet classifier's 1.28M)"
)
MODEL_CARD = ModelCard(FAMILY, PAPER, DEVIATION)

# (expansion t, output channels c, repeats n, first stride s): Sandler et al., table 2
IMAGENET_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def block_table(
    stem: int = 32, settings: tuple[tuple[int, int, int, int], ...] = IMAGENET_SETTINGS
) -> list[tuple[int, int, int, bool]]:
    """Per inverted residual: (hidden width, 0 = no expansion conv; output width; stride; residual)."""
    blocks, channels = [], stem
    for t, c, n, s in settings:
        for index in range(n):
            stride = s if index == 0 else 1
            blocks.append((0 if t == 1 else channels * t, c, stride, stride == 1 and channels == c))
            channels = c
    return blocks


@dataclass
class MobileNetV2FaceConfig:
    stem: int = 32
    stem_stride: int = 2
    # (hidden, out, stride, residual) per block; hidden 0: no expansion (the first block, t = 1)
    blocks: list[tuple[int, int, int, bool]] = field(default_factory=block_table)
    head: int = 1280
    embedding_dim: int = 128
    dropout: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> MobileNetV2FaceConfig:
        data = dict(data)
        data["blocks"] = [(int(h), int(o), int(s), bool(r)) for h, o, s, r in data["blocks"]]  # type: ignore[union-attr]
        return cls(**data)  # type: ignore[arg-type]


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, hidden: int, out_ch: int, stride: int, residual: bool) -> None:
        super().__init__()
        if residual and (stride != 1 or in_ch != out_ch):
            raise ValueError(
                f"a residual block needs stride 1 and equal widths, not {in_ch}->{out_ch}/{stride}"
            )
        self.expand = conv_bn(in_ch, hidden, 1, activation=nn.ReLU6) if hidden else None
        width = hidden or in_ch
        self.depthwise = conv_bn(width, width, 3, stride, groups=width, activation=nn.ReLU6)
        self.project = conv_bn(width, out_ch, 1, activation=None)  # linear bottleneck: no activation
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y  # out of place: the Taylor hooks keep the branch's output


class MobileNetV2Face(FaceEmbedder):
    family = FAMILY
    paper = PAPER
    deviation = DEVIATION

    def __init__(self, config: MobileNetV2FaceConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MobileNetV2FaceConfig()
        if any(hidden == 0 for hidden, *_ in config.blocks[1:]):
            raise ValueError("only the first block may go without an expansion conv")
        self.stem = conv_bn(3, config.stem, 3, stride=config.stem_stride, activation=nn.ReLU6)
        channels = config.stem
        self.blocks = nn.ModuleList()
        for hidden, out_ch, stride, residual in config.blocks:
            self.blocks.append(InvertedResidual(channels, hidden, out_ch, stride, residual))
            channels = out_ch
        self.head = conv_bn(channels, config.head, 1, activation=nn.ReLU6)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.embedding = nn.Linear(config.head, config.embedding_dim, bias=False)
        self.embedding_bn = nn.BatchNorm1d(config.embedding_dim)
        init_weights(self)

    def prunable_units(self) -> dict[str, list[nn.Sequential]]:
        """stem (with the first block's depthwise conv when it has no expansion), each expansion with its
        depthwise conv, each residual stream (the projections summed into it), and the head conv."""
        units: dict[str, list[nn.Sequential]] = {"stem": [self.stem]}
        stage = 0
        for index, block in enumerate(self.blocks):
            if block.expand is None:
                units["stem"].append(block.depthwise)  # depthwise: output channel i is input channel i
            else:
                units[f"block{index}.expand"] = [block.expand, block.depthwise]
            if not block.residual:
                stage += 1
                units[f"stage{stage}.project"] = []
            units[f"stage{stage}.project"].append(block.project)
        units["head"] = [self.head]
        return units

    def sync_config(self) -> MobileNetV2FaceConfig:
        config = self.config
        config.stem = self.stem[0].out_channels
        config.blocks = [
            (
                0 if block.expand is None else block.expand[0].out_channels,
                block.project[0].out_channels,
                stride,
                block.residual,
            )
            for block, (_, _, stride, _) in zip(self.blocks, config.blocks, strict=True)
        ]
        config.head = self.head[0].out_channels
        return config

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding; callers L2-normalise (the ONNX export does it inside)."""
        x = torch.flatten(self.global_pool(self.features(x)), 1)
        return self.embedding_bn(self.embedding(self.dropout(x)))


def create_model(config: MobileNetV2FaceConfig | dict[str, object] | None = None) -> MobileNetV2Face:
    if isinstance(config, dict):
        config = MobileNetV2FaceConfig.from_dict(config)
    return MobileNetV2Face(config)
