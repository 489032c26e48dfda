"""Training on a lent accelerator, exercised on the CPU with real photos: carrying the crop cache in
compressed chunks, SFace as a live PyTorch teacher, live-teacher batches, the time-budgeted multi-student
distillation, and the pruning schedule on live batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning.augment import geometric, mixup
from pruning.checkpoint import load_checkpoint
from pruning.data.faceset import load_faceset, shard_records
from pruning.data.paths import data_root
from pruning.data.prep import PrepConfig, load_labels, prepare
from pruning.data.transfer import pack, unpack
from pruning.live import LiveConfig, LiveData, StudentSpec, load_teacher, main, split_faces, train_live
from pruning.sface import SFaceTeacher, TeacherIntegrityError, fetch_sface, sface_module
from tests.pruning_support import copy_bbt_photos

SFACE_DIR = data_root() / "teachers"


@pytest.fixture(scope="module")
def crops_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real aligned crops of six people (five photos each), in shards of eight."""
    photos = tmp_path_factory.mktemp("photos")
    copy_bbt_photos(photos, per_person=5)
    root = tmp_path_factory.mktemp("crops")
    labels = load_labels(photos / "labels.csv")
    prepare(photos, root / "bbt", name="bbt", labels=labels, config=PrepConfig(shard_size=8, workers=1))
    return root


@pytest.fixture(scope="module")
def teacher_path() -> Path:
    return fetch_sface(SFACE_DIR)


def test_crop_cache_travels_in_chunks_and_is_rebuilt(crops_root: Path, tmp_path: Path) -> None:
    chunks = pack(crops_root, tmp_path / "chunks", max_chunk_bytes=20_000, workers=1)
    assert len(chunks) > 1 and all(c.stat().st_size < 60_000 for c in chunks)
    rebuilt = tmp_path / "rebuilt"
    assert sum(unpack(c, rebuilt, workers=1) for c in chunks) == len(load_faceset(crops_root, teacher=None))
    original, copy = load_faceset(crops_root, teacher=None), load_faceset(rebuilt, teacher=None)
    assert list(copy.file) == list(original.file) and list(copy.identity) == list(original.identity)
    error = np.abs(copy.crops.astype(np.int16) - original.crops).mean()
    assert 0 < error < 4  # lossy (WebP), but a few grey levels at most
    assert shard_records(rebuilt / "bbt", 0) == shard_records(crops_root / "bbt", 0)  # failures too
    assert (rebuilt / "bbt" / "meta.json").read_text() == (crops_root / "bbt" / "meta.json").read_text()
    # deterministic: packing again gives the same bytes
    again = pack(crops_root, tmp_path / "again", max_chunk_bytes=20_000, workers=1)
    assert [c.read_bytes() for c in again] == [c.read_bytes() for c in chunks]


def test_sface_module_matches_onnx_runtime_and_refuses_other_bytes(
    crops_root: Path, teacher_path: Path
) -> None:
    crops = load_faceset(crops_root, teacher=None).crops[:6]
    reference = SFaceTeacher.from_cache(SFACE_DIR).embed_crops(crops)
    module = sface_module(teacher_path.read_bytes())
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))).float()
        converted = module(x).numpy()
    assert np.abs(converted - reference).max() < 1e-3 * np.abs(reference).max()
    tampered = bytearray(teacher_path.read_bytes())
    tampered[-1] ^= 1
    with pytest.raises(TeacherIntegrityError):
        sface_module(bytes(tampered))


def test_geometric_and_mixup_leave_faces_alone_at_zero_probability() -> None:
    x = torch.rand(4, 3, 112, 112) * 255
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(geometric(x, gen, p=0.0), x, atol=1e-2)  # identity resampling
    assert torch.equal(mixup(x, gen, p=0.0), x)
    moved = geometric(x, gen, p=1.0)
    assert (moved - x).abs().mean() > 1  # and they do move it when asked


def test_live_batches_are_the_teachers_view_of_the_students_pixels(
    crops_root: Path, teacher_path: Path
) -> None:
    train, val = split_faces(crops_root, 0.5)
    data = LiveData(train, val, load_teacher(teacher_path), np.zeros(128, np.float32), torch.device("cpu"))
    x, targets = data.batch(0, 8, seed=0)
    assert x.shape == (8, 3, 112, 112) and targets.shape == (8, 128)
    assert torch.allclose(targets.norm(dim=1), torch.ones(8), atol=1e-4)
    assert x.min() >= -1 and x.max() <= 1
    again = data.describe(x * 128 + 127.5)  # the same pixels give the same targets
    assert (again * targets).sum(dim=1).min() > 0.999
    other, _ = data.batch(1, 8, seed=0)
    assert not torch.equal(other, x)  # each step a fresh draw
    x_repeat, _ = data.batch(0, 8, seed=0)
    assert torch.equal(x_repeat, x)  # reproducible per step


def test_live_distillation_writes_checkpoints_the_publisher_and_pruner_take(
    crops_root: Path, teacher_path: Path, tmp_path: Path
) -> None:
    config = LiveConfig(
        run_dir=tmp_path / "live",
        crops_root=crops_root,
        teacher_onnx=teacher_path,
        students=[StudentSpec("sq", "squeezefacenet", lr=1e-3)],
        seconds=25,
        batch_size=8,
        warmup_steps=2,
        val_every=4,
        val_fraction=0.5,
        probe_steps=3,
    )
    summary = train_live(config, progress=False)
    assert summary["steps"] >= 8  # type: ignore[operator]
    model, checkpoint = load_checkpoint(tmp_path / "live" / "sq-best.pt")
    assert checkpoint.meta.teacher == "sface" and len(checkpoint.meta.target_mean or []) == 128
    assert checkpoint.val is not None and "eer" in checkpoint.val
    records = [json.loads(line) for line in (tmp_path / "live" / "metrics.jsonl").read_text().splitlines()]
    plan = next(r for r in records if r.get("event") == "plan")
    assert plan["total_steps"] == summary["steps"]  # the schedule was fitted to the time budget

    # the pruning schedule on the same live batches, through the command the accelerator runs
    args = ["prune", "--crops-root", str(crops_root), "--teacher", str(teacher_path)]
    args += ["--checkpoint", str(tmp_path / "live" / "sq-best.pt"), "--run-dir", str(tmp_path / "prune")]
    args += ["--pruning-ratio", "0.2", "--iterative-steps", "1", "--levels", "0.2"]
    args += ["--importance-batches", "1", "--finetune-steps", "1", "--final-finetune-steps", "1"]
    args += ["--batch-size", "8", "--val-fraction", "0.5"]
    assert main(args) == 0
    level, level_checkpoint = load_checkpoint(tmp_path / "prune" / "level-20.pt")
    assert sum(p.numel() for p in level.parameters()) < sum(p.numel() for p in model.parameters())
    assert level_checkpoint.criterion == "taylor" and level_checkpoint.meta.teacher == "sface"
    assert level_checkpoint.meta.prune_config["round_to"] == 16  # type: ignore[index]
