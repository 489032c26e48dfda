"""Batch augmentation on normalised (N, 3, H, W) tensors: cheap enough for a 2-core CPU.

Flip, colour (brightness/contrast/saturation), grayscale, down-scaling (low-resolution probes) and blur.
With cached teacher descriptors the un-augmented face's descriptor stays the target: the student learns
invariance. With a live teacher (``pruning.live``) the teacher describes the augmented face itself, which
also allows what a cached target cannot follow: small rotations, scalings and shifts of the aligned crop
(:func:`geometric`) and blends of two faces (:func:`mixup`) — "function matching" (Beyer et al. 2022,
"Knowledge distillation: A good teacher is patient and consistent", https://arxiv.org/abs/2106.05237).
Every random draw uses the generator's device, so the same code runs on an accelerator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _mask(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) < p


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
    contrast = torch.empty(n, 1, 1, 1, device=gen.device).uniform_(0.7, 1.3, generator=gen)
    brightness = torch.empty(n, 1, 1, 1, device=gen.device).uniform_(-0.2, 0.2, generator=gen)
    gray = x.mean(dim=1, keepdim=True)
    saturation = torch.empty(n, 1, 1, 1, device=gen.device).uniform_(0.6, 1.4, generator=gen)
    saturation = torch.where(
        _mask(n, 0.1, gen)[:, None, None, None], torch.zeros_like(saturation), saturation
    )
    x = gray + (x - gray) * saturation
    x = (x - mean) * contrast + mean + brightness

    # low resolution: shrink a quarter of the batch by one random factor, then scale back up
    low = _mask(n, 0.25, gen)
    if low.any():
        size = x.shape[-1]
        small = max(
            24, int(size * float(torch.empty(1, device=gen.device).uniform_(0.3, 0.8, generator=gen)))
        )
        shrunk = F.interpolate(
            x[low], size=(small, small), mode="bilinear", antialias=True, align_corners=False
        )
        x[low] = F.interpolate(shrunk, size=(size, size), mode="bilinear", align_corners=False)

    # blur a tenth with a 3×3 binomial kernel
    blur = _mask(n, 0.1, gen)
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
        kernel = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3).contiguous()
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return x.clamp_(-1.0, 1.0)


def geometric(
    x: torch.Tensor,
    gen: torch.Generator,
    p: float = 0.8,
    max_degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    max_shift: float = 0.06,
) -> torch.Tensor:
    """Rotate, scale and shift a ``p`` share of the faces about the crop centre (alignment jitter).

    ``max_shift`` is a fraction of the crop side. Outside the source crop is filled with zeros, as
    alignment fills what lies outside a photo.
    """
    n = x.shape[0]
    device = gen.device
    angle = torch.empty(n, device=device).uniform_(-max_degrees, max_degrees, generator=gen) * math.pi / 180
    zoom = torch.empty(n, device=device).uniform_(scale[0], scale[1], generator=gen)
    shift = torch.empty(n, 2, device=device).uniform_(-2 * max_shift, 2 * max_shift, generator=gen)
    keep = ~_mask(n, p, gen)
    angle = torch.where(keep, torch.zeros_like(angle), angle)
    zoom = torch.where(keep, torch.ones_like(zoom), zoom)
    shift = torch.where(keep[:, None], torch.zeros_like(shift), shift)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def mixup(x: torch.Tensor, gen: torch.Generator, p: float = 0.15) -> torch.Tensor:
    """Blend a ``p`` share of the faces with another face of the batch (weight of the other ~ U(0, 0.5))."""
    n = x.shape[0]
    mixed = _mask(n, p, gen)
    partner = torch.randperm(n, generator=gen, device=gen.device)
    weight = torch.empty(n, 1, 1, 1, device=gen.device).uniform_(0.0, 0.5, generator=gen).to(x.dtype)
    weight = torch.where(mixed[:, None, None, None], weight, torch.zeros_like(weight))
    return x * (1 - weight) + x[partner] * weight
