"""One settings object for the whole service, read from the environment (prefix ``FACEVERIFY_``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from faces.spec import SERVING
from model_store import DEFAULT_ROOT, PreprocessSpec


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEVERIFY_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000

    store_path: Path = DEFAULT_ROOT
    # The detector; None: the serving spec's.
    detector_model: str | None = None
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

    # Face geometry (detector, padding, face choice, template) comes from the serving spec
    # (``faces.spec.SERVING``), the one that training crops, evaluation and published figures use. These
    # override it only where set; any override makes the service depart from the measured figures.
    # Smallest face searched: each halving of it adds pyramid levels (detection time).
    min_face_size: int | None = Field(default=None, ge=12)
    # A detected face whose shorter box side is below this is refused (face_too_small).
    min_face_px: int | None = Field(default=None, ge=0)
    # Longer photos are shrunk for detection only (alignment uses the full-resolution pixels).
    max_detect_side: int | None = Field(default=None, ge=64)

    # Whole request body, multipart overhead included; counted while reading, so chunked bodies obey it too.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(default=25_000_000, ge=1)
    max_enroll_images: int = Field(default=10, ge=1)
    # Files and, separately, text fields one multipart form may carry (parsing stops at the next one).
    max_form_parts: int = Field(default=32, ge=2)
    # Decoded pixels of all images of one request together, judged from their headers before any is
    # decoded: a few kilobytes of uniform PNG can declare 25 MP each, and each megapixel costs CPU time.
    max_request_pixels: int = Field(default=50_000_000, ge=1)
    # Images decoded and detected at once in one process (a bounded pool; the rest wait their turn).
    # None: usable cores // intra_op_threads, at least 1, in every worker process alike: a verify's two
    # photos run side by side while the machine has idle cores (2 gunicorn workers on 2 cores, measured:
    # p50 27.5 → 20.3 ms at concurrency 1, 69 → 65 req/s at saturation, within noise).
    image_workers: int | None = Field(default=None, ge=1)
    # Images over this many pixels are processed one at a time per process: with image_workers at 2, peak
    # memory stays at about one full-size image plus one of this size (~8.5 bytes a pixel at the peak).
    large_image_pixels: int = Field(default=12_000_000, ge=1)
    # Requests (probes and /metrics excepted) handled at once per process; the next one gets
    # 503 overloaded with Retry-After instead of waiting behind all of them.
    max_in_flight: int = Field(default=8, ge=1)
    # Seconds an admitted request's images may wait for the pool (from when its upload has been read); a
    # request that would wait longer gets 503 overloaded with Retry-After instead of a late answer. This,
    # not max_in_flight, keeps the accepted requests' latency bounded under overload. None: no limit.
    queue_timeout_seconds: float | None = Field(default=0.5, gt=0)
    retry_after_seconds: int = Field(default=1, ge=0)
    # Request line plus headers of one request; more bytes or more header fields get 431, before the
    # request reaches the application.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=1)
    # Seconds a connection may take to deliver a request's headers (from connect, or from the first byte
    # of a kept-alive connection's next request); and how long an idle kept-alive connection stays open.
    header_timeout: float = Field(default=10.0, gt=0)
    keep_alive_timeout: float = Field(default=5.0, gt=0)
    # Templates one user may hold per variant (one per enrolled image); enrolling past it is refused.
    max_templates_per_user: int = Field(default=50, ge=1)
    # After SIGTERM, keep serving this many seconds with /readyz answering 503 (so a load balancer stops
    # sending new requests) before the server stops accepting and drains.
    drain_delay_seconds: float = Field(default=0.0, ge=0)
    identify_top_k: int = Field(default=5, ge=1, le=100)

    # When set, every /v1 route requires it in X-API-Key (probes and /metrics stay open for the platform).
    api_key: SecretStr | None = None
    # The browser demo at /demo: static files that call /v1 like any client (with the key typed into it).
    demo: bool = True
    # sqlite:///relative/path.db or sqlite:////absolute/path.db (SQLAlchemy's spelling), or
    # postgresql://user:password@host:port/database for the shared pgvector gallery (several replicas).
    gallery_url: str = "sqlite:///./gallery.db"
    # PostgreSQL gallery only: connections per process, and how identify searches: "hnsw" (the index's
    # candidates re-ranked exactly) or "exact" (a scan of every template of the variant).
    gallery_pool_size: int = Field(default=4, ge=1, le=100)
    gallery_search: Literal["hnsw", "exact"] = "hnsw"
    # Templates the HNSW index returns for re-ranking (its ef_search); more: higher recall, slower.
    # 200: recall@1 0.998 among 100k real faces (100: 0.987), 0.985 at 1M; 300 for ≥ 0.99 at 1M
    # (reports/gallery_1m/).
    gallery_hnsw_candidates: int = Field(default=200, ge=1, le=1000)

    def preprocess_spec(self) -> PreprocessSpec:
        """The serving spec with this deployment's limits (pixel cap always, the rest where set)."""
        overrides: dict[str, object] = {"max_pixels": self.max_pixels}
        for name, value in (
            ("detector", self.detector_model),
            ("min_face_size", self.min_face_size),
            ("min_face_px", self.min_face_px),
            ("max_detect_side", self.max_detect_side),
        ):
            if value is not None:
                overrides[name] = value
        return PreprocessSpec.model_validate(SERVING.model_dump() | overrides)

    @property
    def served_variant_list(self) -> list[str]:
        return [name.strip() for name in self.served_variants.split(",") if name.strip()]

    def image_pool_size(self, cores: int) -> int:
        return self.image_workers or max(1, cores // self.intra_op_threads)
