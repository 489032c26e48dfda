"""Batch augmentation on normalised (N, 3, H, W) tensors: cheap enough for a 2-core CPU.

Flip, colour (brightness/contrast/saturation), grayscale, down-scaling (low-resolution probes) and blur.
The teacher's descriptor of the un-augmented face stays the target: the student learns invariance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _mask(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def flip_mask(n: int, gen: torch.Generator) -> torch.Tensor:
    """Which of ``n`` faces to mirror (half): drawn first, so the caller can pick mirror-image targets."""
    return _mask(n, 0.5, gen)


def augment(x: torch.Tensor, gen: torch.Generator, flip: torch.Tensor | None = None) -> torch.Tensor:
    """``flip``: the faces to mirror (default: a fresh :func:`flip_mask`)."""
    n = x.shape[0]
    flip = flip_mask(n, gen) if flip is None else flip
    x = torch.where(flip[:, None, None, None], x.flip(3), x)

    # colour: contrast about each image's mean, brightness shift, saturation towards gray
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = torch.empty(n, 1, 1, 1).uniform_(0.7, 1.3, generator=gen)
    brightness = torch.empty(n, 1, 1, 1).uniform_(-0.2, 0.2, generator=gen)
    gray = x.mean(dim=1, keepdim=True)
    saturation = torch.empty(n, 1, 1, 1).uniform_(0.6, 1.4, generator=gen)
    saturation = torch.where(
        _mask(n, 0.1, gen)[:, None, None, None], torch.zeros_like(saturation), saturation
    )
    x = gray + (x - gray) * saturation
    x = (x - mean) * contrast + mean + brightness

    # low resolution: shrink a quarter of the batch by one random factor, then scale back up
    low = _mask(n, 0.25, gen)
    if low.any():
        size = x.shape[-1]
        small = max(24, int(size * float(torch.empty(1).uniform_(0.3, 0.8, generator=gen))))
        shrunk = F.interpolate(
            x[low], size=(small, small), mode="bilinear", antialias=True, align_corners=False
        )
        x[low] = F.interpolate(shrunk, size=(size, size), mode="bilinear", align_corners=False)

    # blur a tenth with a 3×3 binomial kernel
    blur = _mask(n, 0.1, gen)
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        kernel = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3).contiguous()
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return x.clamp_(-1.0, 1.0)
