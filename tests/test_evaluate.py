"""The verification harness: pair-list parsing, the LFW protocol's metrics, end to end on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from faces.evaluation import (
    best_threshold,
    centre_fallback,
    evaluate,
    read_pairs,
    verification_metrics,
    write_report,
)
from pruning.calibrate import calibrate
from tests.conftest import DATA

BBT = DATA / "e2e" / "bbt"


def test_reads_lfw_pairs_format(tmp_path: Path) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(
        "2\t1\nAbel_Pacheco\t1\t4\nAbdel_Madi_Shabneh\t1\tDean_Barker\t1\nZico\t2\t3\nAnn\t10\tBob\t2\n"
    )
    pairs = read_pairs(path)
    assert [p.fold for p in pairs] == [0, 0, 1, 1]
    assert [p.same for p in pairs] == [True, False, True, False]
    assert pairs[0].path_a == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert pairs[0].path_b == "Abel_Pacheco/Abel_Pacheco_0004.jpg"
    assert pairs[3].path_a == "Ann/Ann_0010.jpg" and pairs[3].path_b == "Bob/Bob_0002.jpg"


def test_reads_csv_pairs_with_and_without_folds(tmp_path: Path) -> None:
    with_folds = tmp_path / "a.csv"
    with_folds.write_text("path_a,path_b,same,fold\nx.jpg,y.jpg,1,3\nx.jpg,z.jpg,0,4\n")
    assert [(p.same, p.fold) for p in read_pairs(with_folds)] == [(True, 3), (False, 4)]
    without = tmp_path / "b.csv"
    without.write_text("path_a,path_b,same\n" + "".join(f"a{i}.jpg,b{i}.jpg,{i % 2}\n" for i in range(12)))
    pairs = read_pairs(without)
    assert [p.fold for p in pairs][:11] == [*range(10), 0]
    assert [p.same for p in pairs][:2] == [False, True]


def test_the_real_lfw_pairs_file_parses() -> None:
    lfw = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "lfw" / "pairs.txt"
    pairs = read_pairs(lfw)
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert sorted({p.fold for p in pairs}) == list(range(10))


def test_metrics_on_known_scores() -> None:
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 300)
    folds = np.tile(np.arange(10), 60)
    separable = np.where(same, rng.uniform(0.6, 1.0, 600), rng.uniform(-0.2, 0.4, 600))
    perfect = verification_metrics(separable, same, folds)
    assert perfect["accuracy_mean"] == 1.0 and perfect["eer"] == 0.0 and perfect["tar_at_far_1e-3"] == 1.0
    noise = verification_metrics(rng.uniform(0, 1, 600), same, folds)
    assert 0.4 < noise["accuracy_mean"] < 0.6 and 0.4 < noise["eer"] < 0.6
    assert 0.4 < best_threshold(separable, same) < 0.6


def test_calibration_threshold_meets_its_false_match_rate() -> None:
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(200), 5)
    centres = rng.normal(size=(200, 64))
    vectors = centres[ids] + 0.8 * rng.normal(size=(1000, 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    result = calibrate(vectors, ids)
    threshold = result["thresholds"]["1e-3"]
    sims = vectors @ vectors.T
    impostor = sims[np.triu_indices(1000, 1)][(ids[:, None] != ids[None, :])[np.triu_indices(1000, 1)]]
    assert abs(np.mean(impostor > threshold) - 1e-3) < 2e-4
    assert 0 < result["eer"] < 0.5 and result["n_genuine"] == 200 * 10
    with pytest.raises(ValueError):
        calibrate(vectors[:5], ids[:5])  # one identity: no impostor pairs


def test_centre_fallback_is_inside_the_photo() -> None:
    face = centre_fallback(250, 250)
    assert not face.detected
    assert (face.landmarks > 60).all() and (face.landmarks < 190).all()
    assert face.landmarks[0, 0] < face.landmarks[1, 0]


@pytest.fixture(scope="module")
def teacher_embed():
    from pruning.teacher import DlibTeacher

    return DlibTeacher().embed_faces


def test_end_to_end_on_real_photos(tmp_path: Path, teacher_embed) -> None:
    """The dlib teacher through the harness tells the bbt people apart; a blank photo falls back."""
    people = ["amy", "howard", "leonard", "penny", "raj", "sheldon"]
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((150, 150, 3), 90, np.uint8))
    rows = ["path_a,path_b,same"]
    for i, person in enumerate(people):
        rows.append(f"{person}/{person}1.png,{person}/{person}2.png,1")
        rows.append(f"{person}/{person}3.png,{person}/{person}4.png,1")
        other = people[(i + 1) % len(people)]
        rows.append(f"{person}/{person}1.png,{other}/{other}2.png,0")
        rows.append(f"{person}/{person}3.png,{other}/{other}5.png,0")
    rows.append("amy/amy5.png,../blank_link/blank.png,0")
    root = tmp_path / "root"
    root.mkdir()
    for person in people:
        (root / person).symlink_to(BBT / person)
    (root.parent / "blank_link").mkdir()
    (root.parent / "blank_link" / "blank.png").symlink_to(tmp_path / "blank.png")
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text("\n".join(rows) + "\n")

    metrics = evaluate(read_pairs(pairs_csv), root, teacher_embed, cache_dir=tmp_path / "cache")
    assert metrics["n_pairs"] == 25
    assert metrics["failures_to_acquire"] == 1
    assert metrics["auc"] > 0.95
    out = tmp_path / "report" / "bbt.json"
    write_report(metrics, out, "dlib-teacher")
    saved = json.loads(out.read_text())
    assert saved["label"] == "dlib-teacher" and "roc" not in saved
    assert out.with_suffix(".png").stat().st_size > 10_000
    # the detection cache is reused on the next run
    assert len(list((tmp_path / "cache").glob("faces-*.npz"))) == 1


def test_face_selection_policies(tmp_path: Path) -> None:
    from faces.detect import Face
    from faces.evaluation import default_selection
    from faces.quality import select_face
    from faces.spec import BENCHMARK, SERVING

    def face(x1: float, y1: float, side: float) -> Face:
        return Face(np.array([x1, y1, x1 + side, y1 + side], np.float32), 0.99, np.zeros((5, 2), np.float32))

    bystander, subject = face(0, 150, 110), face(80, 80, 90)  # largest first, as the detector returns them
    assert select_face([bystander, subject], 250, 250, SERVING) is bystander
    assert select_face([bystander, subject], 250, 250, BENCHMARK) is subject
    by_box = SERVING.model_copy(update={"selection": "box"})
    assert select_face([bystander, subject], 250, 250, by_box, np.array([85, 85, 165, 165])) is subject
    lfw = tmp_path / "pairs.txt"
    lfw.write_text("10\t300\n")
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("path_a,path_b,same\n")
    assert default_selection(lfw) == "centre" and default_selection(csv_file) == "largest"
