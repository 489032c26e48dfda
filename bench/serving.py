"""/v1/verify latency and throughput per variant and concurrency, plus embedding-only latency per variant.

Run:  .venv/bin/python bench/serving.py                      (starts `faceverify serve` on a free port)
      .venv/bin/python bench/serving.py --url http://127.0.0.1:8000 [--api-key K]   (a running server)
Writes reports/service.json and reports/service.md. (Not named bench/service.py: a script's folder comes
first on sys.path, so that file would shadow the ``service`` package for every script in bench/.)

The load generator is one asyncio loop sending a pre-encoded multipart body (two 250×250 LFW JPEGs), so
the client costs little CPU; it still shares the machine with the server, which the report notes with the
load average. Server-side stage times come from the server's own /metrics (histogram sum/count deltas).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from model_store import DEFAULT_ROOT, ModelStore
from service.config import Settings
from service.inference.embedder import Embedder
from service.inference.pipeline import FacePipeline, Timings
from service.vision.align import align_face
from service.vision.decode import decode_image
from service.vision.detect import DetectorConfig, MTCNNDetector

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared/datasets/lfw/images"
DEFAULT_PAIR = ("George_W_Bush/George_W_Bush_0001.jpg", "George_W_Bush/George_W_Bush_0002.jpg")
STAGES = ("decode", "detect", "align", "embed", "match")
BOUNDARY = "faceverify-bench-boundary"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def multipart(parts: dict[str, bytes]) -> bytes:
    chunks = []
    for name, data in parts.items():
        chunks.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
        )
        chunks.append(data + b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


# ---- embedding only, in process ----------------------------------------------------------------------
def embedding_latency(store: ModelStore, refs: list[str], data: bytes, iters: int, dlib: bool) -> dict:
    """Per variant: the network alone on one aligned face, and the CPU time of one whole image through the
    serving pipeline on one thread (what a request costs on an idle core, without HTTP)."""
    settings = Settings()
    detector = MTCNNDetector.from_store(
        store,
        settings.detector_model,
        DetectorConfig(min_face_size=settings.min_face_size, max_image_side=settings.max_detect_side),
    )
    pipeline = FacePipeline(detector, max_pixels=settings.max_pixels, min_face_px=settings.min_face_px)
    image = decode_image(data, max_pixels=settings.max_pixels)
    face = detector.detect(image)[0]
    out: dict[str, dict[str, float | int | None]] = {}
    for ref in refs:
        embedder = Embedder.from_store(store, ref, intra_op_threads=1)
        crop = align_face(image, face.landmarks, embedder.template)[None]
        cpu = []
        for _ in range(max(20, iters // 5)):
            start = time.thread_time()
            pipeline.process(data, [embedder], Timings(ref))
            cpu.append(time.thread_time() - start)
        out[ref] = {
            "params": embedder.manifest.params,
            "flops": embedder.manifest.flops,
            **_time(embedder.embed, crop, iters),
            "pipeline_cpu_ms_per_image": 1e3 * statistics.median(cpu),
        }
    if dlib:
        try:
            from pruning.teacher import DlibTeacher
        except ImportError as error:  # the serving environment has no dlib
            print(f"dlib descriptor skipped: {error}", file=sys.stderr)
        else:
            teacher = DlibTeacher()
            chip = teacher.chip(image, face.box)  # its own 150×150 chip, as the teacher cache uses
            describe = teacher._net.compute_face_descriptor  # the network alone, as embed() is for ours
            out["dlib_face_recognition_resnet_model_v1"] = {
                "params": None,
                "flops": None,
                **_time(describe, chip, iters),
            }
    return out


def _time(fn, arg, iters: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for _ in range(10):
        fn(arg)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return {"p50_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * percentile(times, 99), "iters": iters}


# ---- the server ------------------------------------------------------------------------------------------
def start_server(
    store: Path, threads: int
) -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp = tempfile.TemporaryDirectory(prefix="faceverify-bench-")
    env = {
        **os.environ,
        "FACEVERIFY_STORE_PATH": str(store),
        "FACEVERIFY_GALLERY_URL": f"sqlite:///{tmp.name}/gallery.db",
        "FACEVERIFY_INTRA_OP_THREADS": str(threads),
    }
    env.pop("FACEVERIFY_API_KEY", None)  # a started server is open; --url with --api-key for a guarded one
    log = open(Path(tmp.name) / "server.log", "wb")  # noqa: SIM115  # closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "faceverify.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("server exited:\n" + (Path(tmp.name) / "server.log").read_text())
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return process, url, tmp
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start within 90 s")


def scrape_stages(client: httpx.Client) -> dict[tuple[str, str, str], float]:
    """(metric suffix, stage-or-endpoint, variant) → value, for the stage and request histograms."""
    values: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("faceverify_stage_duration_seconds_"):
                key = (sample.name.rsplit("_", 1)[1], sample.labels["stage"], sample.labels["variant"])
            elif sample.name.startswith("faceverify_request_duration_seconds_"):
                key = (sample.name.rsplit("_", 1)[1], sample.labels["endpoint"], sample.labels["variant"])
            else:
                continue
            values[key] = sample.value
    return values


def stage_means(before: dict, after: dict, variant: str) -> dict[str, float]:
    out = {}
    for stage in (*STAGES, "/v1/verify"):
        count = after.get(("count", stage, variant), 0) - before.get(("count", stage, variant), 0)
        total = after.get(("sum", stage, variant), 0) - before.get(("sum", stage, variant), 0)
        if count:
            out["request" if stage == "/v1/verify" else stage] = 1e3 * total / count
    return out


async def load(url: str, body: bytes, headers: dict[str, str], concurrency: int, n: int, warmup: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=120) as client:

        async def one() -> tuple[float, int]:
            start = time.perf_counter()
            response = await client.post("/v1/verify", content=body)
            return time.perf_counter() - start, response.status_code

        for _ in range(warmup):
            await one()
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        tickets = itertools.count()

        async def worker() -> None:
            while next(tickets) < n:
                elapsed, status = await one()
                latencies.append(elapsed)
                statuses[status] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": 1e3 * percentile(latencies, 50),
        "p90_ms": 1e3 * percentile(latencies, 90),
        "p99_ms": 1e3 * percentile(latencies, 99),
        "mean_ms": 1e3 * statistics.fmean(latencies),
        "throughput_rps": len(latencies) / wall,
    }


# ---- report ----------------------------------------------------------------------------------------------
def write_reports(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    env = result["environment"]
    lines = [
        "# REST service: /v1/verify latency and throughput",
        "",
        f"`{result['command']}`",
        "",
        *([result["note"], ""] if result["note"] else []),
        f"Two 250×250 LFW JPEGs ({', '.join(result['pair'])}) per request; {result['requests_per_level']} "
        f"requests per level after {result['warmup']} warm-up requests; ONNX Runtime intra-op threads "
        f"{env['intra_op_threads']}; {env['cpus']} CPUs; load average before the run "
        f"{env['loadavg_before']} (other jobs on the machine inflate every figure). "
        f"Detector {result.get('detector')}. "
        f"Target: p50 ≤ 25 ms at concurrency 1 with the default variant ({result['default']}).",
        "",
        "| variant | concurrency | p50 ms | p90 ms | p99 ms | throughput req/s | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, levels in result["verify"].items():
        for level in levels:
            lines.append(
                f"| {variant} | {level['concurrency']} | {level['p50_ms']:.1f} | {level['p90_ms']:.1f} | "
                f"{level['p99_ms']:.1f} | {level['throughput_rps']:.1f} | {level['statuses']} |"
            )
    lines += [
        "",
        "Server-side mean per request at concurrency 1 (ms; decode/detect/align/embed are per image, two per "
        "request; the two images run concurrently, so the stages add up to more than the request):",
        "",
        "| variant | request | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for variant, stages in result["server_stages_c1"].items():
        cells = " | ".join(f"{stages.get(s, float('nan')):.2f}" for s in STAGES)
        lines.append(f"| {variant} | {stages.get('request', float('nan')):.2f} | {cells} |")
    lines += [
        "",
        "Embedding only (one aligned face, batch 1, one thread, in process), and the CPU time of one image "
        "through the whole serving pipeline (decode → detect → align → embed) on one thread:",
        "",
        "| model | params | embed p50 ms | embed p99 ms | pipeline CPU ms per image |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["embedding_only"].items():
        pipeline_cpu = row.get("pipeline_cpu_ms_per_image")
        lines.append(
            f"| {name} | {row['params'] or '–'} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{'–' if pipeline_cpu is None else f'{pipeline_cpu:.1f}'} |"
        )
    (out / "service.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="benchmark this running server instead of starting one")
    parser.add_argument("--api-key", help="X-API-Key for --url")
    parser.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--variants", nargs="*", help="default: every variant the server lists")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--requests", type=int, default=200, help="per variant and concurrency level")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads of a started server")
    parser.add_argument("--embed-iters", type=int, default=300)
    parser.add_argument("--no-dlib", action="store_true", help="skip the dlib descriptor reference")
    parser.add_argument("--lfw", type=Path, default=LFW)
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--note", default="", help="a line for the report (e.g. which build was measured)")
    args = parser.parse_args()

    images = [(args.lfw / name).read_bytes() for name in DEFAULT_PAIR]
    loadavg = [round(x, 2) for x in os.getloadavg()]
    store = ModelStore(args.store)
    embedders = [str(r) for r in store.refs() if store.manifest(r).kind == "embedder"]
    embedding_only = embedding_latency(store, embedders, images[0], args.embed_iters, not args.no_dlib)

    process = tmp = None
    url = args.url
    if url is None:
        process, url, tmp = start_server(args.store, args.threads)
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            models = client.get("/v1/models").json()
            variants = args.variants or [v["ref"] for v in models["variants"]]
            if not variants:
                raise SystemExit(
                    "the server serves no embedding variant (none published); nothing to measure"
                )
            body = multipart({"image_a": images[0], "image_b": images[1]})
            verify: dict[str, list[dict]] = {}
            stages: dict[str, dict[str, float]] = {}
            for variant in variants:
                verify[variant] = []
                for concurrency in args.concurrency:
                    before = scrape_stages(client)
                    level = asyncio.run(
                        load(
                            url,
                            body,
                            {**headers, "X-Model-Variant": variant},
                            concurrency,
                            args.requests,
                            args.warmup,
                        )
                    )
                    if concurrency == 1:
                        stages[variant] = stage_means(before, scrape_stages(client), variant)
                    verify[variant].append(level)
                    print(variant, json.dumps(level))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        if tmp is not None:
            tmp.cleanup()

    result = {
        "command": shlex.join(["python", "bench/serving.py", *sys.argv[1:]]),
        "note": args.note,
        "pair": list(DEFAULT_PAIR),
        "default": models["default"],
        "detector": models.get("detector"),
        "requests_per_level": args.requests,
        "warmup": args.warmup,
        "environment": {
            "cpus": os.cpu_count(),
            "loadavg_before": loadavg,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "intra_op_threads": args.threads if args.url is None else "server's",
            "python": platform.python_version(),
        },
        "verify": verify,
        "server_stages_c1": stages,
        "embedding_only": embedding_only,
    }
    write_reports(result, args.out)
    print(json.dumps({"embedding_only": embedding_only, "server_stages_c1": stages}, indent=2))


if __name__ == "__main__":
    main()
