"""Helpers of the API tests (their fixtures are in ``tests/api_fixtures.py``)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store import DEFAULT_ROOT, InputSpec, Manifest, ModelNotFound, ModelStore, OutputSpec
from service.config import Settings

DATA = Path(__file__).parent / "data"
E2E = DATA / "e2e"


# The store whose models the API tests use: the committed one. FACEVERIFY_E2E_STORE points the same tests at
# another store, e.g. to check a candidate model before it is published into the committed one.
REAL_STORE_ROOT = Path(os.environ.get("FACEVERIFY_E2E_STORE") or DEFAULT_ROOT)


def committed_default() -> str | None:
    """The store's ``default`` embedder (name@version), or None while none is published."""
    store = ModelStore(REAL_STORE_ROOT)
    try:
        ref = store.resolve("default")
    except ModelNotFound:
        return None
    return str(ref) if store.manifest(ref).kind == "embedder" else None


COMMITTED_DEFAULT = committed_default()
needs_real_model = pytest.mark.skipif(
    COMMITTED_DEFAULT is None,
    reason="the committed model store has no `default` embedder yet (squeezefacenet@1 is being trained)",
)


def synthetic_embedder_onnx(path: Path, *, seed: int, dim: int = 128) -> None:
    """A small, fixed, random-projection network with the embedder contract (input "input" N×3×112×112).

    It is not a face model: it only exercises the plumbing (variant selection, gallery keys, switching)
    where the committed store has fewer variants than a test needs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((3 * 14 * 14, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weight"], ["embedding"]),
        ],
        "synthetic_embedder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


# synth-b poses as a pruned child of synth-a, so /v1/models has a pruning record to summarise.
SYNTHETIC_PRUNING = {
    "synth-b": {
        "criterion": "taylor",
        "pruning_ratio": 0.3,
        "removed_share": 0.3,
        "params_removed_share": 0.45,
        "flops_removed_share": 0.25,
        "config": {"run_dir": "/internal/runs/prune-taylor"},
    }
}


def publish_synthetic(store: ModelStore, name: str, *, seed: int, threshold: float = 0.9) -> Manifest:
    folder = store.root.parent / f".build-{name}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    synthetic_embedder_onnx(folder / "model.onnx", seed=seed)
    manifest = Manifest(
        name=name,
        version=1,
        kind="embedder",
        description="synthetic random-projection embedder for plumbing tests",
        artifacts={},
        input=InputSpec(
            size=(112, 112), mean=(127.5,) * 3, std=(128.0,) * 3, alignment_template="arcface_112"
        ),
        output=OutputSpec(embedding_dim=128, normalised=False),
        params=3 * 14 * 14 * 128,
        thresholds={"1e-3": threshold},
        parent="synth-a@1" if name in SYNTHETIC_PRUNING else None,
        pruning=SYNTHETIC_PRUNING.get(name),
    )
    return store.publish(manifest, {"model": folder / "model.onnx"})


def build_store(
    root: Path, *, synthetic: list[str], default: str | None, committed_embedders: bool = True
) -> ModelStore:
    """A temporary store: the committed detector, the committed embedders and the named synthetic ones."""
    committed = ModelStore(REAL_STORE_ROOT)
    store = ModelStore(root)
    root.mkdir(parents=True, exist_ok=True)
    for ref in committed.refs():
        if not committed_embedders and committed.manifest(ref).kind == "embedder":
            continue
        shutil.copytree(committed.root / ref.name / str(ref.version), root / ref.name / str(ref.version))
    for seed, name in enumerate(synthetic):
        publish_synthetic(store, name, seed=seed)
    if default is not None:
        store.set_alias("default", default)
    return store


def make_settings(store_root: Path, gallery: Path, **overrides: object) -> Settings:
    return Settings(store_path=store_root, gallery_url=f"sqlite:///{gallery}", **overrides)


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def read(path: Path) -> bytes:
    return path.read_bytes()


def image_file(name: str, data: bytes, content_type: str = "image/jpeg") -> tuple[str, bytes, str]:
    return (name, data, content_type)


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert set(body) >= {"type", "title", "status", "code", "detail"}
    return body
