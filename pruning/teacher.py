"""The distillation teacher: dlib's ResNet face descriptor (128-D, LFW 99.38 % published, CC0).

King 2017, http://blog.dlib.net/2017/02/high-quality-face-recognition-with-deep.html. It needs its own
150×150 chip: dlib's 5-point shape predictor is run on the box our MTCNN found, then ``get_face_chip``.
It costs ~80 ms a face on one core here, so every training face is described once and cached per shard
(``teacher-00000.npy`` beside ``shard-00000.npy``), by parallel worker processes, resumably.
"""

from __future__ import annotations

import os
import warnings
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pruning.data.faceset import accepted_records, atomic_save_npy, finished_shards, read_meta, teacher_path

TEACHER_NAME = "dlib_face_recognition_resnet_model_v1"
TEACHER_DIM = 128


class DlibTeacher:
    def __init__(self) -> None:
        import dlib

        with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import face_recognition_models as frm

        self._dlib = dlib
        self._shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def chip(self, image_rgb: np.ndarray, box: np.ndarray | list[float]) -> np.ndarray:
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        shape = self._shape(image_rgb, self._dlib.rectangle(x1, y1, x2, y2))
        return np.asarray(self._dlib.get_face_chip(image_rgb, shape, size=150, padding=0.25))

    def describe(self, image_rgb: np.ndarray, box: np.ndarray | list[float]) -> np.ndarray:
        """One face → its raw 128-D descriptor (dlib's own output, roughly unit length)."""
        return self.describe_chip(self.chip(image_rgb, box))

    def describe_chip(self, chip_rgb: np.ndarray) -> np.ndarray:
        """A ready 150×150 chip → its raw descriptor."""
        descriptor = self._net.compute_face_descriptor(np.ascontiguousarray(chip_rgb))
        return np.asarray(descriptor, dtype=np.float32)

    def embed_faces(self, images: list[np.ndarray], faces: list) -> np.ndarray:
        """The evaluation harness's interface (photos + acquired faces → descriptors)."""
        return np.stack([self.describe(image, face.box) for image, face in zip(images, faces, strict=True)])


# ---- cache builder ----------------------------------------------------------------------------------
_worker: dict[str, object] = {}


def _init_worker(photos_root: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker["teacher"] = DlibTeacher()
    _worker["root"] = Path(photos_root)


def _describe(job: tuple[str, list[float]]) -> np.ndarray:
    from faces.decode import decode_image

    rel, box = job
    root: Path = _worker["root"]  # type: ignore[assignment]
    teacher: DlibTeacher = _worker["teacher"]  # type: ignore[assignment]
    image = decode_image((root / rel).read_bytes(), max_pixels=40_000_000)
    return teacher.describe(image, box)


def build_teacher_cache(crops_dir: Path, *, workers: int = 2, progress: bool = True) -> int:
    """Describe every accepted face of every finished prep shard that has no teacher file yet."""
    from tqdm import tqdm

    meta = read_meta(crops_dir)
    todo = []
    for shard in finished_shards(crops_dir):
        if teacher_path(crops_dir, shard).exists():
            continue
        todo.append((shard, [(r["file"], r["box"]) for r in accepted_records(crops_dir, shard)]))
    total = sum(len(jobs) for _, jobs in todo)
    if not total:
        return 0
    bar = tqdm(total=total, desc=f"teacher {meta['name']}", unit="face", disable=not progress)
    with get_context("spawn").Pool(workers, _init_worker, (meta["photos_root"],)) as pool:
        for shard, jobs in todo:
            descriptors = []
            for descriptor in pool.imap(_describe, jobs, chunksize=4):
                descriptors.append(descriptor)
                bar.update()
            stacked = np.stack(descriptors) if descriptors else np.zeros((0, TEACHER_DIM), np.float32)
            atomic_save_npy(teacher_path(crops_dir, shard), stacked)
    bar.close()
    return total
