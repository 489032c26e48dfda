from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from model_store import (
    ArtifactIntegrityError,
    InputSpec,
    Manifest,
    ModelNotFound,
    ModelStore,
    ModelStoreError,
    OutputSpec,
)


def _draft(name: str = "toy") -> Manifest:
    return Manifest(
        name=name,
        version=1,
        kind="embedder",
        artifacts={},
        input=InputSpec(
            size=(112, 112), mean=(127.5,) * 3, std=(128.0,) * 3, alignment_template="arcface_112"
        ),
        output=OutputSpec(embedding_dim=128, normalised=True),
        params=10,
        thresholds={"1e-3": 0.42},
    )


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"not really onnx, but bytes are bytes" * 10)
    return path


@pytest.fixture
def tmp_store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def test_publish_assigns_versions_and_hashes(tmp_store: ModelStore, artifact: Path) -> None:
    first = tmp_store.publish(_draft(), {"model": artifact})
    second = tmp_store.publish(_draft(), {"model": artifact})
    assert (first.version, second.version) == (1, 2)
    assert first.artifact.bytes == artifact.stat().st_size
    assert len(first.artifact.sha256) == 64
    assert tmp_store.versions("toy") == [1, 2]
    # nothing but the two versions in the model's folder: no staging leftovers
    assert sorted(p.name for p in (tmp_store.root / "toy").iterdir()) == ["1", "2"]


def test_resolve_name_version_and_alias(tmp_store: ModelStore, artifact: Path) -> None:
    tmp_store.publish(_draft(), {"model": artifact})
    tmp_store.publish(_draft(), {"model": artifact})
    assert str(tmp_store.resolve("toy")) == "toy@2"  # bare name → latest
    assert str(tmp_store.resolve("toy@1")) == "toy@1"
    tmp_store.set_alias("default", "toy@1")
    assert str(tmp_store.resolve("default")) == "toy@1"
    assert json.loads((tmp_store.root / "aliases.json").read_text()) == {"default": "toy@1"}


@pytest.mark.parametrize("ref", ["nope", "toy@7", "TOY", "toy@x", ""])
def test_unknown_refs_list_what_exists(tmp_store: ModelStore, artifact: Path, ref: str) -> None:
    tmp_store.publish(_draft(), {"model": artifact})
    with pytest.raises(ModelNotFound) as caught:
        tmp_store.resolve(ref)
    assert caught.value.available == ["toy@1"]


def test_alias_cannot_shadow_a_model_or_point_nowhere(tmp_store: ModelStore, artifact: Path) -> None:
    tmp_store.publish(_draft(), {"model": artifact})
    with pytest.raises(ModelStoreError):
        tmp_store.set_alias("toy", "toy@1")
    with pytest.raises(ModelNotFound):
        tmp_store.set_alias("default", "toy@9")


def test_load_returns_verified_bytes(tmp_store: ModelStore, artifact: Path) -> None:
    tmp_store.publish(_draft(), {"model": artifact})
    manifest, data = tmp_store.load("toy")
    assert data == artifact.read_bytes()
    assert manifest.thresholds == {"1e-3": 0.42}


def test_corrupted_artifact_is_refused_naming_the_file(tmp_store: ModelStore, artifact: Path) -> None:
    published = tmp_store.publish(_draft(), {"model": artifact})
    path = tmp_store.root / "toy" / "1" / published.artifact.file
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError) as caught:
        tmp_store.load("toy@1")
    assert "model.onnx" in str(caught.value) and "sha256" in str(caught.value)
    with pytest.raises(ArtifactIntegrityError):
        tmp_store.verify("toy@1")


def test_missing_artifact_is_refused(tmp_store: ModelStore, artifact: Path) -> None:
    published = tmp_store.publish(_draft(), {"model": artifact})
    (tmp_store.root / "toy" / "1" / published.artifact.file).unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        tmp_store.verify("toy")


def test_failed_publish_leaves_nothing_behind(tmp_store: ModelStore, artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        tmp_store.publish(_draft(), {"model": artifact, "extra": tmp_path / "does-not-exist.onnx"})
    assert tmp_store.versions("toy") == []
    assert list((tmp_store.root / "toy").iterdir()) == []


def test_publishing_an_existing_version_fails(tmp_store: ModelStore, artifact: Path) -> None:
    tmp_store.publish(_draft(), {"model": artifact})
    with pytest.raises(ModelStoreError, match="already exists"):
        tmp_store.publish(_draft(), {"model": artifact}, version=1)


def test_manifest_schema_rejects_bad_fields() -> None:
    payload = _draft().model_dump(mode="json")
    Manifest.model_validate(payload)
    with pytest.raises(ValidationError):
        Manifest.model_validate(payload | {"surprise": 1})
    with pytest.raises(ValidationError):
        Manifest.model_validate(
            payload | {"artifacts": {"model": {"file": "m", "sha256": "xyz", "bytes": 1}}}
        )
    with pytest.raises(ValidationError):
        Manifest.model_validate(payload | {"name": "Bad Name"})


def test_committed_store_verifies(store: ModelStore) -> None:
    refs = [str(r) for r in store.refs()]
    assert "mtcnn@1" in refs
    for ref in refs:
        store.verify(ref)
    detector = store.manifest("mtcnn")
    assert detector.kind == "detector"
    assert set(detector.artifacts) == {"pnet", "rnet", "onet"}


def test_copied_store_detects_tampering(store: ModelStore, tmp_path: Path) -> None:
    copy = ModelStore(shutil.copytree(store.root, tmp_path / "copy"))
    onet = copy.version_dir("mtcnn") / "onet.onnx"  # the version "mtcnn" resolves to
    onet.write_bytes(onet.read_bytes()[:-10])
    with pytest.raises(ArtifactIntegrityError, match=r"onet\.onnx"):
        copy.load("mtcnn", "onet")
