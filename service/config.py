"""One settings object for the whole service, read from the environment (prefix ``FACEVERIFY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store import DEFAULT_ROOT


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEVERIFY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000

    store_path: Path = DEFAULT_ROOT
    detector_model: str = "mtcnn"
    default_variant: str = "default"

    # ONNX Runtime threads per session; with several workers keep workers × threads ≤ cores.
    intra_op_threads: int = Field(default=1, ge=1)

    # Faces smaller than this are not searched for: a 20 px face carries little identity at 112×112, and
    # each halving of the minimum adds pyramid levels (detection time).
    min_face_size: int = Field(default=40, ge=12)
    # Longer photos are shrunk for detection only (alignment uses the full-resolution pixels).
    max_detect_side: int = Field(default=1280, ge=64)

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=25_000_000, ge=1)

    api_key: SecretStr | None = None
    gallery_url: str = "sqlite:///./gallery.db"
