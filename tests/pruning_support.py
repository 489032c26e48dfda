"""Shared by the pruning tests: a cosine distillation loss and random batches of crops with unit targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, target = batch
    return (1 - (F.normalize(model(x), dim=1) * target).sum(dim=1)).mean()


def random_batches(n: int = 2, seed: int = 1, size: int = 6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, 3, 112, 112, generator=generator),
            F.normalize(torch.randn(size, 128, generator=generator), dim=1),
        )
        for _ in range(n)
    ]
