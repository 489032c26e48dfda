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
    # Used when a request names no variant: an alias, a name (latest version) or name@version.
    default_variant: str = "default"
    # Key into each embedder manifest's ``thresholds``: the false-match rate the decisions are tuned for.
    # Variants without a threshold for it are not loaded (they could not decide anything).
    target_fmr: str = "1e-3"
    # Comma-separated variants to serve (refs, names for their latest version, aliases); the default is always
    # served. Empty: every calibrated embedder in the store. Enrolment stores a template per served variant.
    served_variants: str = ""

    # ONNX Runtime threads per session; with several workers keep workers × threads ≤ cores.
    intra_op_threads: int = Field(default=1, ge=1)

    # Faces smaller than this are not searched for: a 20 px face carries little identity at 112×112, and
    # each halving of the minimum adds pyramid levels (detection time).
    min_face_size: int = Field(default=40, ge=12)
    # A detected face whose shorter box side is below this is refused (face_too_small): MTCNN's boxes can
    # come out smaller than the search minimum after regression, and such crops are mostly upsampling blur.
    min_face_px: int = Field(default=32, ge=0)
    # Longer photos are shrunk for detection only (alignment uses the full-resolution pixels).
    max_detect_side: int = Field(default=1280, ge=64)

    # Whole request body, multipart overhead included; counted while reading, so chunked bodies obey it too.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=25_000_000, ge=1)
    max_enroll_images: int = Field(default=10, ge=1)
    identify_top_k: int = Field(default=5, ge=1, le=100)

    # When set, every /v1 route requires it in X-API-Key (probes and /metrics stay open for the platform).
    api_key: SecretStr | None = None
    # The browser demo at /demo: static files that call /v1 like any client (with the key typed into it).
    demo: bool = True
    # sqlite:///relative/path.db or sqlite:////absolute/path.db (SQLAlchemy's spelling).
    gallery_url: str = "sqlite:///./gallery.db"

    @property
    def served_variant_list(self) -> list[str]:
        return [name.strip() for name in self.served_variants.split(",") if name.strip()]
