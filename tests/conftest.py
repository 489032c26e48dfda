from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store import ModelStore
from service.vision.decode import decode_image
from service.vision.detect import DetectorConfig, MTCNNDetector

DATA = Path(__file__).parent / "data"
LFW_SAMPLES = sorted((DATA / "lfw").glob("*.jpg"))


@pytest.fixture(scope="session")
def store() -> ModelStore:
    """The committed model store (read-only use)."""
    return ModelStore()


@pytest.fixture(scope="session")
def detector(store: ModelStore) -> MTCNNDetector:
    return MTCNNDetector.from_store(store, "mtcnn", DetectorConfig())


def load_rgb(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), max_pixels=50_000_000)
