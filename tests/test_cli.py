from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

from model_store import DEFAULT_ROOT
from tests.conftest import DATA, LFW_SAMPLES


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faceverify.cli", *args], capture_output=True, text=True, check=False
    )


def test_models_list_json() -> None:
    result = run_cli("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert "mtcnn@1" in [row["ref"] for row in listed["models"]]


def test_models_show_and_table() -> None:
    shown = run_cli("models", "show", "mtcnn@1")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["kind"] == "detector"
    table = run_cli("models", "list")
    assert table.stdout.splitlines()[0].split()[:2] == ["REF", "KIND"]


def test_models_verify_passes_then_fails_on_tampering(tmp_path: Path) -> None:
    assert run_cli("models", "verify").returncode == 0
    root = shutil.copytree(DEFAULT_ROOT, tmp_path / "store")
    (root / "mtcnn" / "1" / "pnet.onnx").write_bytes(b"garbage")
    result = run_cli("--store", str(root), "models", "verify", "--json")
    assert result.returncode == 1
    rows = {row["ref"]: row for row in json.loads(result.stdout)}
    assert not rows["mtcnn@1"]["ok"] and "pnet.onnx" in rows["mtcnn@1"]["error"]
    assert all(row["ok"] for ref, row in rows.items() if ref != "mtcnn@1")  # the others are untouched


def test_unknown_model_is_a_clean_error() -> None:
    result = run_cli("models", "show", "nosuchmodel")
    assert result.returncode == 1
    assert "unknown model 'nosuchmodel'" in result.stderr and "Traceback" not in result.stderr


def test_detect_prints_faces_and_writes_aligned_crops(tmp_path: Path) -> None:
    image = LFW_SAMPLES[0]
    result = run_cli("detect", str(image), "--crops", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["faces"]) >= 1
    face = report["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0.7 <= face["score"] <= 1.0
    crops = sorted(tmp_path.glob("*.png"))
    assert len(crops) == len(report["faces"])
    assert cv2.imread(str(crops[0])).shape == (112, 112, 3)


def test_detect_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    result = run_cli("detect", str(fake))
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] in {"invalid_image", "unsupported_format"}
    assert "Traceback" not in result.stderr


def test_detect_group_photo(tmp_path: Path) -> None:
    result = run_cli("detect", str(DATA / "selfie-many-people.jpg"))
    assert len(json.loads(result.stdout)["faces"]) >= 3


def test_zero_workers_is_refused() -> None:
    result = run_cli("serve", "--workers", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr


def test_prune_publish_as_needs_the_benchmark_pairs_before_it_runs(tmp_path: Path) -> None:
    # The checkpoint does not even exist: the missing option is reported before any work starts.
    run_dir = tmp_path / "run"
    result = run_cli("prune", str(tmp_path / "dense.pt"), "--run-dir", str(run_dir), "--publish-as", "x")
    assert result.returncode == 2
    assert "--publish-as needs --pairs and --images-root" in result.stderr
    assert not run_dir.exists()


def test_eval_writes_every_pairs_score_and_decision(tmp_path: Path) -> None:
    import csv

    bbt = DATA / "e2e" / "bbt"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "path_a,path_b,same\n"
        "amy/amy1.png,amy/amy2.png,1\nraj/raj1.png,raj/raj3.png,1\namy/amy1.png,raj/raj1.png,0\n"
    )
    out = tmp_path / "scores.csv"
    args = ["eval", "--variant", "squeezefacenet@3", "--pairs", str(pairs), "--images-root", str(bbt)]
    result = run_cli(*args, "--scores", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["path_a"], r["same"]) for r in rows] == [
        ("amy/amy1.png", "1"),
        ("raj/raj1.png", "1"),
        ("amy/amy1.png", "0"),
    ]
    threshold = json.loads(run_cli("models", "show", "squeezefacenet@3").stdout)["thresholds"]["1e-3"]
    assert all(int(r["match"]) == (float(r["score"]) >= threshold) for r in rows)
    assert min(float(r["score"]) for r in rows[:2]) > float(rows[2]["score"])


def test_train_family_is_checked_before_any_work(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    unknown = run_cli("train", "--run-dir", str(run_dir), "--family", "vgg16")
    assert unknown.returncode == 2 and "choose from squeezefacenet, mobilenetv2, resnet50" in unknown.stderr
    with_init = run_cli("train", "--run-dir", str(run_dir), "--family", "resnet50", "--init", "x.pt")
    assert with_init.returncode == 2 and "--init brings its own architecture" in with_init.stderr
    pooling = run_cli("train", "--run-dir", str(run_dir), "--family", "mobilenetv2", "--pooling", "gdc")
    assert pooling.returncode == 2 and "--pooling is a squeezefacenet option" in pooling.stderr
    assert not run_dir.exists()
