"""Prometheus metrics, one registry per app (so tests and benchmarks can build many apps in one process).

Under several worker processes (gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` set) prometheus-client writes every
value to per-process files in that directory and ``/metrics`` aggregates all workers' files, so a scrape that
lands on any worker sees the whole service.

Labels are low-cardinality by construction: route templates (``/v1/users/{user_id}``, never the id), variant
refs, stage names, decision and error codes. Nothing about a person, a file or an embedding goes in here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from faces.embed import Embedder

# Seconds; dense where the target lives (a verify should take ~10–50 ms on two cores).
_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)

# Variant label of requests that use no embedder (users, models) and of enrolment, which uses all of them.
NO_VARIANT = "none"
ALL_VARIANTS = "all"

CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus-client runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "faceverify_request_duration_seconds",
            "Time to answer a /v1 request, by route template and model variant.",
            ["endpoint", "variant"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "faceverify_stage_duration_seconds",
            "Time spent in one pipeline stage for one image (decode, detect, align, embed) or one match.",
            ["stage", "variant"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter(
            "faceverify_decisions_total",
            "Verify and identify outcomes (match / no_match) by variant.",
            ["decision", "variant"],
            registry=self.registry,
        )
        self.errors = Counter(
            "faceverify_errors_total",
            "Requests answered with an error, by stable error code.",
            ["code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "faceverify_in_flight_requests",
            "Requests being handled now (probes and /metrics excepted); at max_in_flight a worker sheds.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "faceverify_model_info",
            "Loaded embedding variants (value 1); default=true marks the one used without X-Model-Variant.",
            ["variant", "name", "version", "sha256", "params", "embedding_dim", "default"],
            registry=self.registry,
            # Every live worker loads the same variants: report 1 per variant, not one series per pid.
            multiprocess_mode="livemax",
        )

    def observe_stages(self, timings: Iterable[tuple[str, str, float]]) -> None:
        for stage, variant, seconds in timings:
            self.stage_duration.labels(stage=stage, variant=variant).observe(seconds)

    def decision(self, matched: bool, variant: str) -> None:
        self.decisions.labels(decision="match" if matched else "no_match", variant=variant).inc()

    def set_models(self, embedders: Iterable[Embedder], default_ref: str | None) -> None:
        if multiprocess_dir() is None:  # not implemented there; each worker sets its variants once, at start
            self.model_info.clear()
        for embedder in embedders:
            manifest = embedder.manifest
            self.model_info.labels(
                variant=embedder.ref,
                name=manifest.name,
                version=str(manifest.version),
                sha256=embedder.sha256,
                params=str(manifest.params or ""),
                embedding_dim=str(embedder.dim),
                default=str(embedder.ref == default_ref).lower(),
            ).set(1)

    def render(self) -> bytes:
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        # A fresh registry per scrape: MultiProcessCollector reads every worker's files at collect time.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry)
