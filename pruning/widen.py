"""Function-preserving widening of a trained SqueezeFaceNet (Net2WiderNet).

Net2Net: Chen, Goodfellow & Shlens 2016, https://arxiv.org/abs/1511.05641. A filter is widened by copying
existing filters (their batch-norm statistics too, so each copy's activation equals its source's) and by
sharing the consumers' input weights between a source and its copies, so the wider network computes the
same function and training carries on from the narrow network's accuracy instead of from scratch.

Why here: the dense SqueezeFaceNet's training cosine to the SFace teacher flattened at ~0.78 while samples
kept coming (reports/training.md, "A lent GPU"), which points at capacity. The squeeze layers are the
network's bottleneck (16 channels carry a whole 28×28 map into fire2 and fire3), so they are widened first;
the expand layers and the head keep their widths. The split of a consumer's weight between a source and
its copies is uneven by a small random amount with the same sum, so the function is unchanged but the
copies receive different gradients and can diverge (plain halves would keep them identical forever).

CLI: ``python -m pruning.widen --from squeezefacenet@8 --squeeze-factor 2 --out wide.pt``, then
``faceverify train --from wide.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from pruning.checkpoint import load_checkpoint, materialise, save_checkpoint
from pruning.models import FaceEmbedder, count_params
from pruning.models.squeezefacenet import Fire, SqueezeFaceNet


def _copy_map(width: int, new_width: int, generator: torch.Generator) -> torch.Tensor:
    """Source channel of every channel of the wider layer: the originals first, then copies of random ones
    (each original copied at most ``new_width // width`` times more, as evenly as the count allows)."""
    if new_width < width:
        raise ValueError(f"cannot widen {width} channels to {new_width}")
    extra = new_width - width
    rounds = [torch.randperm(width, generator=generator) for _ in range(-(-extra // width))]
    copies = torch.cat(rounds)[:extra] if rounds else torch.empty(0, dtype=torch.long)
    return torch.cat([torch.arange(width), copies])


def _conv_like(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """A bias-free convolution with ``conv``'s kernel, stride and padding and other channel counts."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=False,
    )


def _widen_conv_bn(block: nn.Sequential, sources: torch.Tensor) -> nn.Sequential:
    """The conv → BN (→ ReLU) block with output channel i a copy of ``sources[i]``."""
    conv, bn = block[0], block[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.bias is None
    wide = _conv_like(conv, conv.in_channels, len(sources))
    wide_bn = nn.BatchNorm2d(len(sources), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        wide.weight.copy_(conv.weight[sources])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(wide_bn, name).copy_(getattr(bn, name)[sources])
        if wide_bn.num_batches_tracked is not None and bn.num_batches_tracked is not None:
            wide_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
    return nn.Sequential(wide, wide_bn, *block[2:])


def _share_inputs(
    block: nn.Sequential, sources: torch.Tensor, generator: torch.Generator, jitter: float
) -> nn.Sequential:
    """The consumer conv block reading the widened channels: each source's input weight split among the
    source and its copies, in shares that sum to one (uneven by ``jitter`` to break the symmetry)."""
    conv = block[0]
    assert isinstance(conv, nn.Conv2d) and conv.groups == 1
    counts = torch.bincount(sources, minlength=conv.in_channels).to(conv.weight.dtype)
    shares = 1.0 / counts[sources] * (1 + jitter * (2 * torch.rand(len(sources), generator=generator) - 1))
    # Renormalise so that every source's shares add up to exactly one.
    totals = torch.zeros(conv.in_channels, dtype=shares.dtype).index_add_(0, sources, shares)
    shares = shares / totals[sources]
    wide = _conv_like(conv, len(sources), conv.out_channels)
    with torch.no_grad():
        wide.weight.copy_(conv.weight[:, sources] * shares.view(1, -1, 1, 1))
    return nn.Sequential(wide, *block[1:])


def widen_squeezes(
    model: FaceEmbedder, factor: float, *, seed: int = 0, jitter: float = 0.2
) -> SqueezeFaceNet:
    """``model`` with every Fire's squeeze layer ``factor`` times as wide, computing the same function."""
    if not isinstance(model, SqueezeFaceNet):
        raise ValueError(f"only squeezefacenet can be widened here, not {model.family}")
    generator = torch.Generator().manual_seed(seed)
    for fire in model.fires:
        assert isinstance(fire, Fire)
        squeeze = fire.squeeze[0]
        assert isinstance(squeeze, nn.Conv2d)
        width = squeeze.out_channels
        sources = _copy_map(width, round(width * factor), generator)
        fire.squeeze = _widen_conv_bn(fire.squeeze, sources)
        fire.expand1 = _share_inputs(fire.expand1, sources, generator, jitter)
        fire.expand3 = _share_inputs(fire.expand3, sources, generator, jitter)
    model.sync_config()
    return model


def widen_checkpoint(source: Path, out: Path, factor: float, *, seed: int = 0) -> SqueezeFaceNet:
    """Writes ``out``: ``source``'s network widened (its metadata and target space kept); returns it."""
    model, checkpoint = load_checkpoint(source)
    wide = widen_squeezes(model, factor, seed=seed)
    meta = checkpoint.meta
    meta.config = dict(meta.config) | {
        "widened": {"from": str(source), "squeeze_factor": factor, "seed": seed}
    }
    save_checkpoint(out, wide, meta=meta, **checkpoint.lineage)
    return wide


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="source", required=True, help="a checkpoint or a published variant")
    parser.add_argument("--squeeze-factor", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    source = materialise(args.source, args.out.parent)
    wide = widen_checkpoint(source, args.out, args.squeeze_factor, seed=args.seed)
    print(f"{args.out}: fires {wide.sync_config().fires}, {count_params(wide):,} parameters")


if __name__ == "__main__":
    main()
