"""Shared by the pruning tests: a cosine distillation loss, random batches of crops with unit targets, and a
labelled folder of real face photos."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from tests.conftest import DATA

BBT_PEOPLE = ["amy", "howard", "leonard", "penny", "raj", "sheldon"]


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


def copy_bbt_photos(folder: Path, per_person: int) -> None:
    """The first ``per_person`` face photos of each of six people into ``folder``, with ``labels.csv``."""
    rows = []
    for person in BBT_PEOPLE:
        for path in sorted((DATA / "e2e" / "bbt" / person).glob("*.png"))[:per_person]:
            shutil.copy(path, folder / path.name)
            rows.append((path.name, f"bbt:{person}"))
    with (folder / "labels.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("file", "identity"), *rows])
