"""A published face-embedding variant run with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from faces.tensor import crops_to_tensor
from model_store import Manifest, ModelStore

MAX_BATCH = 64


class Embedder:
    """Aligned crops → L2-normalised embeddings. Safe to call from several threads at once."""

    def __init__(self, manifest: Manifest, onnx_model: bytes, *, intra_op_threads: int = 1) -> None:
        if manifest.kind != "embedder" or manifest.output is None:
            raise ValueError(f"{manifest.ref} is not an embedder")
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name

    @classmethod
    def from_store(cls, store: ModelStore, ref: str, *, intra_op_threads: int = 1) -> Embedder:
        manifest, data = store.load(ref)
        return cls(manifest, data, intra_op_threads=intra_op_threads)

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def sha256(self) -> str:
        """Content hash of the weights: the gallery keys templates by it, so a re-trained model never
        matches templates made by its predecessor even if it reuses the name."""
        return self.manifest.artifact.sha256

    @property
    def template(self) -> str:
        return self.manifest.input.alignment_template or "arcface_112"

    @property
    def dim(self) -> int:
        assert self.manifest.output is not None
        return self.manifest.output.embedding_dim

    def threshold(self, fmr: str = "1e-3") -> float:
        return self.manifest.thresholds[fmr]

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB aligned crops → (N, D) float32 unit vectors.

        Runs at most ``MAX_BATCH`` crops per call: a network's activations grow with the batch (SFace on
        1,600 validation crops in one call took 14 GB), and larger batches are no faster on CPU.
        """
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        spec = self.manifest.input
        parts = []
        for start in range(0, len(crops), MAX_BATCH):
            x = crops_to_tensor(crops[start : start + MAX_BATCH], spec.mean, spec.std)
            parts.append(self._session.run(None, {self._input_name: x})[0].astype(np.float32))
        out = np.concatenate(parts)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
