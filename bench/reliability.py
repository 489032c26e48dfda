"""The service under hostile load: overload, slow clients, kill -9 mid-enrolment, soak, amplification inputs.

Run (loopback only; every part bounded in requests and seconds):

    .venv/bin/python bench/reliability.py --part overload slow     # one bg-pause window each, see below
    .venv/bin/python bench/reliability.py --part soak
    .venv/bin/python bench/reliability.py --part amplify kill
    .venv/bin/python bench/reliability.py --part overload amplify --code /tmp/before --label before

Each part starts its own ``faceverify serve --workers 2`` (gunicorn, uvicorn workers) from ``--code``
(default: this checkout), on a free port, with a fresh gallery; ``--label`` files the results under a
name (``after`` by default), so a run against an export of an older commit
(``git archive <commit> | tar -x -C DIR``) gives the "before" figures. Results are merged into
reports/reliability.json; reports/reliability.md and reports/reliability.png are rewritten from it after
every run.

Memory is read from /proc: VmRSS per worker, and the peak (VmHWM), reset before each amplification input
(``/proc/PID/clear_refs`` 5), so "peak RSS" is the worker's high-water mark during that one request. The
load generator runs on the same 2 cores as the server; the report records the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "tests" / "data" / "e2e"
PHOTO_A = E2E / "deepface" / "img1.jpg"
PHOTO_B = E2E / "deepface" / "img2.jpg"
WORKERS = 2
BOUNDARY = "faceverify-reliability"
REPORTS = ROOT / "reports"


# ---- the server -----------------------------------------------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    folder: Path
    env: dict[str, str]
    code: Path
    extra: dict[str, str] = field(default_factory=dict)

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(code: Path, folder: Path, extra: dict[str, str] | None = None) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "FACEVERIFY_GALLERY_URL": f"sqlite:///{folder}/gallery.db",
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        **(extra or {}),
    }
    for name in ("FACEVERIFY_API_KEY", "FACEVERIFY_INTRA_OP_THREADS", "FACEVERIFY_STORE_PATH"):
        env.pop(name, None)
    (folder / "metrics").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "faceverify.cli", "serve", "--workers", str(WORKERS)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log = open(folder / "server.log", "ab")  # noqa: SIM115  # closed with the process
    process = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", port, folder, env, code, extra or {})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("server exited:\n" + (folder / "server.log").read_text()[-3000:])
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200 and len(server.workers()) == 2:
                # Both workers must have loaded the models: ask until each pid has answered a probe.
                warm_up(server)
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not start within 120 s")


def warm_up(server: Server) -> None:
    body = multipart({"image_a": PHOTO_A.read_bytes(), "image_b": PHOTO_B.read_bytes()})
    for _ in range(8):  # new connections, so both workers see some
        httpx.post(
            f"{server.url}/v1/verify",
            content=body,
            headers=form_headers() | {"Connection": "close"},
            timeout=60,
        )


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


# ---- requests -------------------------------------------------------------------------------------------
def multipart(parts: dict[str, bytes | list[bytes] | str]) -> bytes:
    chunks = []
    for name, value in parts.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str):
                head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                chunks.append(f"{head}{item}\r\n".encode())
                continue
            head = (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            chunks += [head.encode(), item, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def form_headers() -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def seconds_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {q: round(percentile(values, p), 2) for q, p in (("p50", 50), ("p99", 99), ("max", 100))}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1e3 * percentile(latencies, 50), 1),
        "p99_ms": round(1e3 * percentile(latencies, 99), 1),
        "max_ms": round(1e3 * max(latencies), 1) if latencies else float("nan"),
    }


async def closed_loop(url: str, body: bytes, concurrency: int, n: int, seconds: float = 60.0) -> dict:
    """``concurrency`` clients, each sending the next request as soon as it has an answer (no back-off),
    until ``n`` requests were sent or ``seconds`` have passed."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    statuses: Counter[int] = Counter()
    accepted: list[float] = []
    retry_after: Counter[str] = Counter()
    tickets = itertools.count()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120, headers=form_headers()) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while next(tickets) < n and time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/verify", content=body)
                except httpx.TransportError:
                    statuses[0] += 1
                    continue
                elapsed = time.perf_counter() - start
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    accepted.append(elapsed)
                elif response.status_code == 503:
                    retry_after[response.headers.get("retry-after", "missing")] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    total = sum(statuses.values())
    return {
        "concurrency": concurrency,
        "requests": total,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted": summary(accepted),
        "share_shed": round(statuses[503] / total, 3) if total else 0.0,
        "retry_after": dict(retry_after),
        "accepted_per_s": round(len(accepted) / wall, 1),
        "wall_s": round(wall, 1),
    }


# ---- parts ----------------------------------------------------------------------------------------------
def part_overload(server: Server, args: argparse.Namespace) -> dict:
    body = multipart({"image_a": PHOTO_A.read_bytes(), "image_b": PHOTO_B.read_bytes()})
    seconds = args.level_seconds
    out = {"baseline_c1": asyncio.run(closed_loop(server.url, body, 1, args.overload_n // 4, seconds / 2))}
    for factor in (4, 16):
        level = closed_loop(server.url, body, factor * WORKERS, args.overload_n, seconds)
        out[f"x{factor}"] = asyncio.run(level)
        print(f"overload x{factor}", json.dumps(out[f"x{factor}"]))
    return out


def part_slow(server: Server, args: argparse.Namespace) -> dict:
    """500 connections trickling a header line every second, while normal verifies are timed."""
    body = multipart({"image_a": PHOTO_A.read_bytes(), "image_b": PHOTO_B.read_bytes()})
    quiet = asyncio.run(closed_loop(server.url, body, 2, args.slow_n, args.level_seconds / 2))

    async def slowloris(count: int, seconds: float) -> dict:
        opened, closed_at = 0, []
        start = time.perf_counter()

        async def one() -> None:
            nonlocal opened
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            except OSError:
                return
            opened += 1
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            try:
                while time.perf_counter() - start < seconds:
                    writer.write(b"X-Slow: %d\r\n" % random.randrange(10**6))
                    await writer.drain()
                    try:
                        data = await asyncio.wait_for(reader.read(1024), timeout=1.0)
                    except TimeoutError:
                        continue
                    if data == b"" or data.startswith(b"HTTP/1.1 408"):
                        closed_at.append(time.perf_counter() - start)
                        return
            except OSError:
                closed_at.append(time.perf_counter() - start)
            finally:
                writer.close()

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        during = closed_loop(server.url, body, 2, args.slow_n, seconds)
        loaded = await asyncio.to_thread(asyncio.run, during)
        await asyncio.gather(*tasks)
        return {
            "opened": opened,
            "dropped_by_server": len(closed_at),
            "dropped_after_s": seconds_summary(closed_at),
            "normal_while_slow": loaded,
        }

    loaded = asyncio.run(slowloris(500, args.slow_seconds))
    return {"normal_quiet": quiet, **loaded}


def part_kill(args: argparse.Namespace, code: Path, folder: Path) -> dict:
    """kill -9 of the whole process tree while clients enrol; acknowledged users must all be there after."""
    photo = PHOTO_A.read_bytes()
    acknowledged: list[str] = []
    rounds = []
    counter = itertools.count()
    for round_ in range(args.kill_rounds):
        server = start_server(code, folder)

        async def enrol_until_killed(server: Server) -> int:
            statuses: Counter[int] = Counter()
            async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=form_headers()) as client:

                async def worker() -> None:
                    while True:
                        user = f"kill-{next(counter)}"
                        body = multipart({"user_id": user, "images": [photo]})
                        try:
                            response = await client.post("/v1/enroll", content=body)
                        except httpx.TransportError:
                            return
                        statuses[response.status_code] += 1
                        if response.status_code == 201:
                            acknowledged.append(user)

                async def killer() -> None:
                    await asyncio.sleep(args.kill_after)
                    for pid in [*server.workers(), server.process.pid]:
                        os.kill(pid, signal.SIGKILL)

                await asyncio.gather(killer(), *(worker() for _ in range(4)))
            return statuses[201]

        ok = asyncio.run(enrol_until_killed(server))
        server.process.wait()
        rounds.append(ok)
        print(f"kill round {round_}: {ok} acknowledged")
    server = start_server(code, folder)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            present = sum(client.get(f"/v1/users/{user}").status_code == 200 for user in acknowledged)
    finally:
        server.stop()
    with sqlite3.connect(folder / "gallery.db") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    return {
        "rounds": args.kill_rounds,
        "acknowledged_per_round": rounds,
        "acknowledged": len(acknowledged),
        "present_after_restart": present,
        "integrity_check": integrity,
    }


def part_soak(server: Server, args: argparse.Namespace) -> dict:
    body = multipart({"image_a": PHOTO_A.read_bytes(), "image_b": PHOTO_B.read_bytes()})
    samples: list[dict] = []
    latencies: list[tuple[float, float]] = []
    done = 0
    statuses: Counter[int] = Counter()

    async def run() -> None:
        nonlocal done
        tickets = itertools.count()
        start = time.perf_counter()
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=form_headers()) as client:
            deadline = start + args.soak_seconds

            async def worker() -> None:
                nonlocal done
                while next(tickets) < args.soak_n and time.perf_counter() < deadline:
                    t = time.perf_counter()
                    try:
                        response = await client.post("/v1/verify", content=body)
                        statuses[response.status_code] += 1
                    except httpx.TransportError:  # counted, and the soak goes on
                        statuses[0] += 1
                    latencies.append((t - start, time.perf_counter() - t))
                    done += 1

            finished = asyncio.Event()

            async def load() -> None:
                await asyncio.gather(*(worker() for _ in range(args.soak_concurrency)))
                finished.set()

            async def sampler() -> None:
                while not finished.is_set():
                    samples.append(
                        {
                            "t": round(time.perf_counter() - start, 2),
                            "requests": done,
                            "rss_mb": [round(rss_mb(p), 1) for p in server.workers()],
                        }
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(finished.wait(), timeout=1.0)

            await asyncio.gather(sampler(), load())

    asyncio.run(run())
    warm = [s for s in samples if s["requests"] >= args.soak_warmup and len(s["rss_mb"]) == WORKERS]
    slopes = []
    for worker in range(WORKERS):
        x = np.array([s["requests"] for s in warm], float)
        y = np.array([s["rss_mb"][worker] for s in warm], float)
        slopes.append(round(float(np.polyfit(x / 1000, y, 1)[0]), 3) if len(x) > 2 else float("nan"))
    return {
        "requests": done,
        "concurrency": args.soak_concurrency,
        "warmup_requests": args.soak_warmup,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency": summary([d for _, d in latencies]),
        "rss_slope_mb_per_1k": slopes,
        "rss_first_last_mb": [warm[0]["rss_mb"], warm[-1]["rss_mb"]] if warm else [],
        "samples": samples,
        "latency_trace": [
            [round(t, 3), round(1e3 * d, 1)] for t, d in latencies[:: max(1, len(latencies) // 2000)]
        ],
    }


def png(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def amplification_inputs() -> dict[str, tuple[str, bytes]]:
    uniform = png(Image.new("RGB", (5000, 5000), (120, 130, 140)))
    grey16 = png(Image.fromarray(np.full((5000, 5000), 30000, np.uint16)))
    strip = png(Image.new("RGB", (3000, 1), (90, 60, 30)))
    with Image.open(PHOTO_A) as img:  # a real face, 25 MP: the largest photo inside the limits
        big_face = png(img.convert("RGB").resize((5000, 5000), Image.Resampling.BICUBIC), "JPEG", quality=90)
    photo = PHOTO_B.read_bytes()
    return {
        "verify 2 × uniform 5000² PNG": ("/v1/verify", multipart({"image_a": uniform, "image_b": uniform})),
        "verify 2 × 16-bit grey 5000² PNG": ("/v1/verify", multipart({"image_a": grey16, "image_b": grey16})),
        "verify 2 × 25 MP face JPEG": ("/v1/verify", multipart({"image_a": big_face, "image_b": big_face})),
        "enrol 10 × uniform 5000² PNG": (
            "/v1/enroll",
            multipart({"user_id": "amp1", "images": [uniform] * 10}),
        ),
        "enrol 10 × 16-bit grey 5000² PNG": (
            "/v1/enroll",
            multipart({"user_id": "amp2", "images": [grey16] * 10}),
        ),
        "verify 3000×1 PNG strip": ("/v1/verify", multipart({"image_a": strip, "image_b": photo})),
    }


def part_amplify(server: Server, args: argparse.Namespace) -> dict:
    out = {}
    normal = multipart({"image_a": PHOTO_A.read_bytes(), "image_b": PHOTO_B.read_bytes()})
    for name, (route, body) in amplification_inputs().items():
        if args.skip_enrol_bombs and name.startswith("enrol 10"):
            continue  # before the fix these take 5-7 GB; the issue's own figures are quoted instead
        pids = server.workers()
        before = {p: rss_mb(p) for p in pids}
        for pid in pids:
            reset_peak(pid)
        start = time.perf_counter()
        try:
            response = httpx.post(server.url + route, content=body, headers=form_headers(), timeout=300)
            status, code = response.status_code, response.headers.get("content-type", "")
            code = response.json().get("code", "") if "json" in code else ""
        except httpx.TransportError as error:
            status, code = 0, type(error).__name__
        elapsed = time.perf_counter() - start
        peaks = {p: rss_mb(p, "VmHWM") for p in pids}
        answered = max(pids, key=lambda p: peaks[p] - before[p])  # the worker whose memory moved
        time.sleep(1.0)
        # the next ordinary verify on the same connection-less client: latency after the input
        t = time.perf_counter()
        after_status = httpx.post(
            server.url + "/v1/verify", content=normal, headers=form_headers(), timeout=60
        )
        out[name] = {
            "body_bytes": len(body),
            "status": status,
            "code": code,
            "seconds": round(elapsed, 2),
            "rss_before_mb": round(before[answered], 1),
            "peak_rss_mb": round(peaks[answered], 1),
            "rss_after_mb": round(rss_mb(answered), 1),
            "next_verify": {
                "status": after_status.status_code,
                "ms": round(1e3 * (time.perf_counter() - t), 1),
            },
        }
        print(name, json.dumps(out[name]))
    return out


# ---- report ---------------------------------------------------------------------------------------------
def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Reliability under hostile load",
        "",
        "Written by `bench/reliability.py` (loopback, bounded); every part starts",
        "`faceverify serve --workers 2` (gunicorn, 2 uvicorn workers, 2 cores shared with the load "
        "generator). *before* = commit "
        f"{results.get('meta', {}).get('before_commit', '?')} (before issue 14), *after* = this branch. "
        "Default settings (`max_in_flight` 8 per worker, header timeout 10 s, 25 MP per image, 50 MP per "
        "request). Each part's command and load average are in `reliability.json`.",
        "",
    ]
    notes = results.get("meta", {}).get("notes", [])
    if notes:
        lines += ["## Reading these figures", "", *(f"- {note}" for note in notes), ""]
    for label, run in results.items():
        if label == "meta" or not run:
            continue
        lines += [f"## {label}", ""]
        if "overload" in run:
            lines += [
                "### Overload (closed loop, clients resend at once, no back-off)",
                "",
                "| clients | requests | statuses | share shed | accepted p50 / p99 / max ms | accepted/s "
                "| Retry-After |",
                "|---|---|---|---|---|---|---|",
            ]
            for key, level in run["overload"]["result"].items():
                a = level["accepted"]
                lines.append(
                    f"| {level['concurrency']} ({key}) | {level['requests']} | {level['statuses']} | "
                    f"{level['share_shed']:.1%} | {a['p50_ms']} / {a['p99_ms']} / {a['max_ms']} | "
                    f"{level['accepted_per_s']} | {level['retry_after'] or '—'} |"
                )
            lines.append("")
        if "slow" in run:
            s = run["slow"]["result"]
            q, w = s["normal_quiet"], s["normal_while_slow"]
            lines += [
                "### 500 slow-header connections (a header line a second) during normal verifies (2 clients)",
                "",
                f"- opened {s['opened']}, dropped by the server {s['dropped_by_server']} "
                f"(seconds after opening: {s['dropped_after_s'] or '—'})",
                f"- verify alone: p50 {q['accepted']['p50_ms']} ms, p99 {q['accepted']['p99_ms']} ms; "
                f"with the slow connections: p50 {w['accepted']['p50_ms']} ms, "
                f"p99 {w['accepted']['p99_ms']} ms, "
                f"statuses {w['statuses']}",
                "",
            ]
        if "kill" in run:
            k = run["kill"]["result"]
            lines += [
                "### kill -9 of the whole process tree mid-enrolment",
                "",
                f"- {k['rounds']} rounds, acknowledged (201) per round {k['acknowledged_per_round']}; "
                f"acknowledged {k['acknowledged']}, present after restart {k['present_after_restart']}; "
                f"`PRAGMA integrity_check`: {k['integrity_check']}",
                "",
            ]
        if "soak" in run:
            s = run["soak"]["result"]
            lines += [
                f"### Soak: {s['requests']} verifies at concurrency {s['concurrency']}",
                "",
                f"- statuses {s['statuses']}; latency p50 {s['latency']['p50_ms']} ms, "
                f"p99 {s['latency']['p99_ms']} ms",
                f"- RSS per worker after {s['warmup_requests']} warm-up requests: first / last sample "
                f"{s['rss_first_last_mb']} MB; slope **{s['rss_slope_mb_per_1k']} MB per 1,000 requests**",
                "- `reliability.png`: RSS per worker and request latency over the soak",
                "",
            ]
        if "amplify" in run:
            lines += [
                "### Amplification inputs (one request each; the answering worker's memory)",
                "",
                "| input | body | status | s | RSS before → peak → after, MB | next verify |",
                "|---|---|---|---|---|---|",
            ]
            for name, r in run["amplify"]["result"].items():
                lines.append(
                    f"| {name} | {r['body_bytes'] / 1e3:.0f} KB | {r['status']} {r['code']} | "
                    f"{r['seconds']} | "
                    f"{r['rss_before_mb']} → **{r['peak_rss_mb']}** → {r['rss_after_mb']} | "
                    f"{r['next_verify']['status']}, {r['next_verify']['ms']} ms |"
                )
            lines.append("")
    (out / "reliability.md").write_text("\n".join(lines) + "\n")
    plot(results, out)


def plot(results: dict, out: Path) -> None:
    soak = next(
        (run["soak"]["result"] for key, run in results.items() if key != "meta" and "soak" in run), None
    )
    if not soak:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    t = [s["t"] for s in soak["samples"] if len(s["rss_mb"]) == WORKERS]
    for worker in range(WORKERS):
        rss = [s["rss_mb"][worker] for s in soak["samples"] if len(s["rss_mb"]) == WORKERS]
        top.plot(t, rss, label=f"worker {worker + 1}")
    top.set_ylabel("RSS (MB)")
    top.set_title(f"Soak: {soak['requests']} verifies, concurrency {soak['concurrency']}")
    top.legend()
    trace = np.array(soak["latency_trace"])
    bottom.plot(trace[:, 0], trace[:, 1], ".", markersize=2, alpha=0.5)
    bottom.set_ylabel("verify latency (ms)")
    bottom.set_xlabel("seconds")
    bottom.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", nargs="+", choices=["overload", "slow", "kill", "soak", "amplify"], required=True
    )
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to serve (default: this one)")
    parser.add_argument("--label", default="after")
    parser.add_argument("--commit", help="the commit --code was exported from (for the report)")
    parser.add_argument("--out", type=Path, default=REPORTS, help="report folder (default: %(default)s)")
    parser.add_argument("--overload-n", type=int, default=1200)
    parser.add_argument("--slow-n", type=int, default=200)
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    parser.add_argument("--kill-rounds", type=int, default=3)
    parser.add_argument("--kill-after", type=float, default=6.0)
    parser.add_argument(
        "--skip-enrol-bombs", action="store_true", help="leave out the 10-image inputs (for old code)"
    )
    parser.add_argument("--soak-n", type=int, default=10_000)
    parser.add_argument("--soak-concurrency", type=int, default=4)
    parser.add_argument("--soak-seconds", type=float, default=3600.0)
    parser.add_argument("--level-seconds", type=float, default=40.0, help="cap of each load level")
    parser.add_argument("--soak-warmup", type=int, default=2000)
    args = parser.parse_args()

    path = args.out / "reliability.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    meta = results.setdefault("meta", {})
    if args.commit:
        meta["before_commit"] = args.commit
    run = results.setdefault(args.label, {})
    with tempfile.TemporaryDirectory(prefix="faceverify-reliability-") as tmp:
        for part in args.part:
            start = time.perf_counter()
            folder = Path(tmp) / part
            if part == "kill":
                result = part_kill(args, args.code, folder)
            else:
                server = start_server(args.code, folder)
                try:
                    result = {"overload": part_overload, "slow": part_slow, "soak": part_soak}.get(
                        part, part_amplify
                    )(server, args)
                finally:
                    server.stop()
            run[part] = {
                "command": " ".join(["python", "bench/reliability.py", *sys.argv[1:]]),
                "load_average": os.getloadavg(),
                "seconds": round(time.perf_counter() - start, 1),
                "result": result,
            }
            results[args.label] = run
            write_report(results, args.out)


if __name__ == "__main__":
    main()
