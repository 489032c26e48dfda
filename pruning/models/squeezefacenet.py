"""SqueezeFaceNet: a SqueezeNet face embedder with batch normalisation, and its pruned descendants.

SqueezeNet: Iandola et al. 2016, https://arxiv.org/abs/1602.07360 (Fire module: squeeze 1×1 → expand 1×1 ‖
expand 3×3, concatenated). SqueezerFaceNet: Alonso-Fernandez et al. 2023, https://arxiv.org/abs/2307.10377
(Taylor filter pruning of a SqueezeNet face model, up to 40 % fewer parameters).

Deviation from the papers, for CPU cost: the papers feed 113×113 with the first convolution at stride 1;
here the input is 112×112 (the ArcFace alignment template) with a stride-2 3×3 stem and the SqueezeNet 1.1
pooling layout (pools after the stem, fire3 and fire5), which costs about a quarter of the FLOPs of the
stride-1 layout. Feature maps: 56 → 28 (fire2-3) → 14 (fire4-5) → 7 (fire6-9). The embedding head is a
1×1 convolution (``head`` channels) → pooling → linear → batch norm (128-D).

Pooling: ``"gap"`` (global average, SqueezeNet's) or ``"gdc"``, the global depthwise convolution of
MobileFaceNets (Chen et al. 2018, https://arxiv.org/abs/1804.07573): one learnt 7×7 weight map per channel,
because on aligned faces *where* a feature fires matters and plain averaging throws that away. A GDC
initialised to 1/49 is exactly GAP, so :func:`with_pooling` turns a trained GAP network into a GDC one
with the same outputs, and training carries on from there. Measured here: no gain over GAP at our budget
(1,000-step pilots from the same checkpoint, val TAR@FMR1e-3 0.338 vs 0.332; reports/training.md), so the
published models keep GAP.

Every width lives in :class:`SqueezeFaceNetConfig`, so a pruned network is the same class with smaller
widths and is saved as (config, state dict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from pruning.models.base import FaceEmbedder, ModelCard, conv_bn, init_weights

MODEL_CARD = ModelCard(
    family="squeezefacenet",
    paper="https://arxiv.org/abs/2307.10377",
    deviation=(
        "112x112 input (ArcFace template) with a stride-2 3x3 stem and SqueezeNet 1.1 pooling, "
        "instead of the papers' 113x113 input with a stride-1 first convolution: about a quarter "
        "of the FLOPs, for CPU serving and CPU training"
    ),
)


def architecture_record(model: FaceEmbedder) -> dict[str, object]:
    """What a manifest says about the network: family, widths, pooling, and its departure from the paper."""
    return model.architecture_record()


# Side of the last feature map for the 112×112 input (stride 16); a GDC kernel covers it whole.
FEATURE_MAP = 7
POOLINGS = ("gap", "gdc")

DEFAULT_FIRES: tuple[tuple[int, int, int], ...] = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)


@dataclass
class SqueezeFaceNetConfig:
    stem: int = 96
    # (squeeze, expand 1×1, expand 3×3) per Fire module, fire2 … fire9
    fires: list[tuple[int, int, int]] = field(default_factory=lambda: [tuple(f) for f in DEFAULT_FIRES])
    head: int = 768
    embedding_dim: int = 128
    pool_after: tuple[int, ...] = (1, 3)  # max-pool after these fire indices (0 = fire2); one after the stem
    dropout: float = 0.0
    pooling: str = "gap"  # "gap" | "gdc" (see the module docstring)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SqueezeFaceNetConfig:
        data = dict(data)
        data["fires"] = [tuple(f) for f in data["fires"]]  # type: ignore[union-attr]
        data["pool_after"] = tuple(data["pool_after"])  # type: ignore[arg-type]
        return cls(**data)  # type: ignore[arg-type]


class Fire(nn.Module):
    def __init__(self, in_ch: int, squeeze: int, expand1: int, expand3: int) -> None:
        super().__init__()
        self.squeeze = conv_bn(in_ch, squeeze, 1)
        self.expand1 = conv_bn(squeeze, expand1, 1)
        self.expand3 = conv_bn(squeeze, expand3, 3)

    @property
    def out_channels(self) -> int:
        return self.expand1[0].out_channels + self.expand3[0].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1(x), self.expand3(x)], dim=1)


class SqueezeFaceNet(FaceEmbedder):
    family = MODEL_CARD.family
    paper = MODEL_CARD.paper
    deviation = MODEL_CARD.deviation

    def __init__(self, config: SqueezeFaceNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SqueezeFaceNetConfig()
        self.stem = conv_bn(3, config.stem, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        channels = config.stem
        self.fires = nn.ModuleList()
        for squeeze, e1, e3 in config.fires:
            fire = Fire(channels, squeeze, e1, e3)
            self.fires.append(fire)
            channels = fire.out_channels
        self.head = conv_bn(channels, config.head, 1)
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {config.pooling!r}")
        self.global_pool = (
            nn.Conv2d(config.head, config.head, FEATURE_MAP, groups=config.head, bias=False)
            if config.pooling == "gdc"
            else nn.AdaptiveAvgPool2d(1)
        )
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.embedding = nn.Linear(config.head, config.embedding_dim, bias=False)
        self.embedding_bn = nn.BatchNorm1d(config.embedding_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        init_weights(self)
        if isinstance(self.global_pool, nn.Conv2d):
            nn.init.constant_(self.global_pool.weight, 1 / FEATURE_MAP**2)  # starts as global average pooling

    def prunable_units(self) -> dict[str, list[nn.Sequential]]:
        """One convolution per unit (nothing couples output channels here); the embedding never goes."""
        units = {"stem": [self.stem]}
        for index, fire in enumerate(self.fires):
            number = index + 2  # SqueezeNet numbers its Fire modules from 2
            units[f"fire{number}.squeeze"] = [fire.squeeze]
            units[f"fire{number}.expand1"] = [fire.expand1]
            units[f"fire{number}.expand3"] = [fire.expand3]
        units["head"] = [self.head]
        return units

    def sync_config(self) -> SqueezeFaceNetConfig:
        config = self.config
        config.stem = self.stem[0].out_channels
        config.fires = [
            (f.squeeze[0].out_channels, f.expand1[0].out_channels, f.expand3[0].out_channels)
            for f in self.fires
        ]
        config.head = self.head[0].out_channels
        return config

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        for index, fire in enumerate(self.fires):
            x = fire(x)
            if index in self.config.pool_after:
                x = self.pool(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding; callers L2-normalise (the ONNX export does it inside)."""
        x = torch.flatten(self.global_pool(self.features(x)), 1)
        return self.embedding_bn(self.embedding(self.dropout(x)))


def create_model(config: SqueezeFaceNetConfig | dict[str, object] | None = None) -> SqueezeFaceNet:
    if isinstance(config, dict):
        config = SqueezeFaceNetConfig.from_dict(config)
    return SqueezeFaceNet(config)


def with_pooling(model: SqueezeFaceNet, pooling: str) -> SqueezeFaceNet:
    """The same network with another pooling; GAP → GDC keeps every output (the GDC starts at 1/49)."""
    if not isinstance(model, SqueezeFaceNet):
        raise ValueError(f"only squeezefacenet has a pooling choice, not {model.family}")
    if model.config.pooling == pooling:
        return model
    if pooling != "gdc":
        raise ValueError("a learnt GDC cannot be turned back into average pooling without changing outputs")
    config = SqueezeFaceNetConfig.from_dict(model.config.to_dict() | {"pooling": pooling})
    converted = SqueezeFaceNet(config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("global_pool.")}
    missing, unexpected = converted.load_state_dict(state, strict=False)
    assert missing == ["global_pool.weight"] and not unexpected, (missing, unexpected)
    return converted


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, int] = (112, 112)) -> int:
    """Floating-point operations for one image (2 × multiply-accumulates), by fvcore-style counting.

    Uses torch.utils.flop_counter (maintained with PyTorch) rather than a hand-written hook table.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *input_size, device=next(model.parameters()).device))
    model.train(was_training)
    return int(counter.get_total_flops())
