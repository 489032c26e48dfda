"""Same score everywhere: a published figure is what the API gives, a training crop is the serving crop.

Real LFW photos, the real detector, the committed default ONNX variant; nothing of the pipeline is stubbed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from faces.evaluation import Pair, read_pairs
from pruning.data.prep import PrepConfig, iter_records, prepare
from tests.api_support import COMMITTED_DEFAULT, needs_real_model

pytest_plugins = ["tests.api_fixtures"]
pytestmark = needs_real_model

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "datasets" / "lfw"
PER_FOLD = 10  # genuine and as many impostor pairs of each of the 10 folds: 200 pairs


@pytest.fixture(scope="module")
def lfw_pairs() -> list[Pair]:
    pairs = read_pairs(LFW / "pairs.txt")
    chosen = []
    for fold in range(10):
        in_fold = [p for p in pairs if p.fold == fold]
        chosen += [p for p in in_fold if p.same][:PER_FOLD] + [p for p in in_fold if not p.same][:PER_FOLD]
    return chosen


def api_verify(client: TestClient, pair: Pair) -> dict:
    files = {
        "image_a": ("a.jpg", (LFW / "images" / pair.path_a).read_bytes(), "image/jpeg"),
        "image_b": ("b.jpg", (LFW / "images" / pair.path_b).read_bytes(), "image/jpeg"),
    }
    response = client.post("/v1/verify", files=files)
    assert response.status_code == 200, (pair, response.text)
    return response.json()


def test_the_api_and_faceverify_eval_give_every_pair_the_same_score_and_decision(
    real_store_client: TestClient, lfw_pairs: list[Pair], tmp_path: Path
) -> None:
    assert len(lfw_pairs) == 200 and sum(p.same for p in lfw_pairs) == 100
    pairs_csv = tmp_path / "pairs.csv"
    with pairs_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path_a", "path_b", "same", "fold"])
        writer.writerows([p.path_a, p.path_b, int(p.same), p.fold] for p in lfw_pairs)
    scores_csv = tmp_path / "scores.csv"
    # The command a user runs; its detection cache goes to a scratch data root, not the user's.
    env = os.environ | {"FACEVERIFY_DATA": str(tmp_path / "data")}
    command = [
        "eval",
        "--variant",
        "default",
        "--pairs",
        str(pairs_csv),
        "--images-root",
        str(LFW / "images"),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "faceverify.cli", *command, "--scores", str(scores_csv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["label"] == COMMITTED_DEFAULT and summary["failures_to_acquire"] == 0
    rows = list(csv.DictReader(scores_csv.open()))
    assert [(r["path_a"], r["path_b"]) for r in rows] == [(p.path_a, p.path_b) for p in lfw_pairs]

    answers = [api_verify(real_store_client, pair) for pair in lfw_pairs]
    assert {a["variant"] for a in answers} == {COMMITTED_DEFAULT}
    api_scores = np.array([a["score"] for a in answers])
    eval_scores = np.array([float(r["score"]) for r in rows])
    api_match = np.array([a["match"] for a in answers])
    eval_match = np.array([r["match"] == "1" for r in rows])
    delta = np.abs(api_scores - eval_scores)
    print(
        f"\n{len(rows)} pairs: decisions equal {int(np.sum(api_match == eval_match))}, "
        f"max |Δscore| {delta.max():.2e}"
    )
    assert np.array_equal(api_match, eval_match), [
        lfw_pairs[i] for i in np.flatnonzero(api_match != eval_match)
    ]
    assert delta.max() <= 1e-4, [lfw_pairs[i] for i in np.flatnonzero(delta > 1e-4)]
    # Not a degenerate agreement: the decisions follow the truth on most pairs.
    assert np.mean(api_match == np.array([p.same for p in lfw_pairs])) > 0.8


def test_the_prep_crop_of_a_photo_is_the_serving_crop(
    real_store_client: TestClient, lfw_pairs: list[Pair], tmp_path: Path
) -> None:
    photos = sorted({p.path_a for p in lfw_pairs[:6]} | {p.path_b for p in lfw_pairs[:6]})
    folder = tmp_path / "photos"
    for rel in photos:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(LFW / "images" / rel)
    out = tmp_path / "crops"
    prepare(folder, out, name="lfw-sample", config=PrepConfig(shard_size=64, workers=1), progress=False)
    records = [r for r in iter_records(out) if r["status"] == "ok"]
    assert len(records) >= 0.8 * len(photos)  # the training gates keep almost every LFW face
    shard = np.load(out / "shard-00000.npy")

    resources = real_store_client.app.state.resources  # the service's own pipeline and default variant
    pipeline, embedder = resources.pipeline, resources.variants.default
    assert embedder is not None and embedder.template == PrepConfig.spec.template
    for record in records:
        image = pipeline.decode((folder / str(record["file"])).read_bytes())
        found = pipeline.acquire(image)
        assert found.ok and found.face is not None
        serving = pipeline.align(image, found.face, embedder.template)
        prep = shard[int(record["row"])]
        diff = int(np.abs(serving.astype(np.int16) - prep.astype(np.int16)).max())
        assert diff <= 1, (record["file"], diff)
