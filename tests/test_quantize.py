"""``faceverify quantize`` on a committed flip-fused variant, calibrated on real validation crops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from faces.embed import Embedder
from faceverify.cli import main
from model_store import ModelStore
from pruning.data.faceset import load_validation
from pruning.data.prep import PrepConfig, prepare
from pruning.quantize import LfwCalibrationError, QuantConfig, quantize_variant
from tests.conftest import DATA

BBT = DATA / "e2e" / "bbt"
PARENT = "squeezerfacenet-taylor-30@3"  # pruned and flip-fused: the harder graph of the two
COMMITTED = ModelStore()


def _prepare(photos: Path, out: Path, name: str, labels: dict[str, str]) -> None:
    prepare(photos, out / name, name=name, labels=labels, config=PrepConfig(shard_size=16, workers=1),
            progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crop cache of real photos of eight people (five each), prepared without teacher descriptors."""
    photos, root = tmp_path_factory.mktemp("photos"), tmp_path_factory.mktemp("data")
    labels = {}
    for person in sorted(p.name for p in BBT.iterdir() if p.is_dir()):
        for path in sorted((BBT / person).glob("*.png")):
            shutil.copy(path, photos / path.name)
            labels[path.name] = f"bbt:{person}"
    _prepare(photos, root / "crops", "bbt", labels)
    return root


@pytest.fixture()
def store(tmp_path: Path) -> ModelStore:
    parent = COMMITTED.resolve(PARENT)
    target = tmp_path / "models" / parent.name / str(parent.version)
    shutil.copytree(COMMITTED.root / parent.name / str(parent.version), target)
    return ModelStore(tmp_path / "models")


def test_cli_publishes_an_int8_child_with_lineage(
    data_root: Path, store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--store", str(store.root), "quantize", PARENT, "--data", str(data_root), "--val-fraction", "1"]
    # 40 faces are 700 impostor pairs: too few for FMR 1e-3, refused before any work is published ...
    assert main(args) == 1
    assert "700 impostor pairs" in capsys.readouterr().err
    # ... enough for 2e-2 (a test-sized target; `faceverify quantize` uses the service's 1e-3 and 1e-4).
    assert main([*args, "--calibration-crops", "16", "--fmr", "2e-2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    manifest = store.verify("squeezerfacenet-taylor-30-int8")  # re-hashes the published bytes
    parent = store.manifest(PARENT)
    assert printed["published"] == manifest.ref == "squeezerfacenet-taylor-30-int8@1"
    assert manifest.parent == PARENT and manifest.pruning is None
    # the spec the variant is served with travels in its manifest (typed)
    assert manifest.preprocess is not None and manifest.preprocess["serving"].template == "arcface_112"
    q = manifest.quantization
    assert q and q.format == "QDQ" and q.weights == "int8, per channel"
    assert q.calibration_crops == 16 and q.calibration_sources == ["bbt"]
    assert q.parent_sha256 == parent.artifact.sha256
    assert manifest.architecture == parent.architecture and manifest.params == parent.params
    # Its own threshold, calibrated on the validation faces (not the parent's copied over).
    assert set(manifest.thresholds) == {"2e-2"} and manifest.thresholds["2e-2"] != parent.thresholds["1e-3"]
    validation = manifest.metrics["validation"]
    assert validation["n_genuine"] <= 8 * 10 and validation["n_impostor"] >= 500  # 5 photos a person
    assert 0 < validation["tar_at_fmr_2e-2"] <= 1
    assert "lfw" not in manifest.metrics  # not asked to measure it

    graph = onnx.load(str(store.version_dir(manifest.ref) / manifest.artifact.file)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 26  # every convolution of the network (shared by both flip passes)

    # The int8 embeddings of the real faces stay close to the float parent's.
    faces = load_validation(data_root / "crops", fraction=1.0)
    int8 = Embedder.from_store(store, manifest.ref).embed(faces.crops)
    float_ = Embedder.from_store(store, PARENT).embed(faces.crops)
    cosine = np.sum(int8 * float_, axis=1)
    assert cosine.min() > 0.98 and manifest.metrics["int8_vs_parent"]["min_cosine"] == pytest.approx(
        cosine.min(), abs=1e-3
    )

    with pytest.raises(ValueError, match="already quantised"):
        config = QuantConfig(val_fraction=1.0, fmrs=(2e-2,))
        quantize_variant(store, manifest.ref, data_root / "crops", config=config)


def test_calibration_refuses_lfw(tmp_path: Path, store: ModelStore) -> None:
    lfw_photos = DATA / "lfw"  # real LFW photos: the crops' meta records where they came from
    labels = {p.name: p.stem.rsplit("_", 1)[0] for p in lfw_photos.glob("*.jpg")}
    _prepare(lfw_photos, tmp_path / "crops", "faces", labels)
    with pytest.raises(LfwCalibrationError, match="LFW"):
        quantize_variant(store, PARENT, tmp_path / "crops", config=QuantConfig(val_fraction=1.0))
    assert store.versions("squeezerfacenet-taylor-30-int8") == []
