"""Training throughput of each embedder family under each CPU execution setting, and the budget it buys.

One training step as ``faceverify train`` takes it (pruning/train.py): a batch of 64 uint8 crops → tensor →
augmentation → forward → distillation loss (cosine + similarity-preserving + contrastive) → backward → AdamW,
on 2 threads. Settings: eager fp32 (NCHW), channels_last, channels_last with bf16 autocast (the CPU's
AVX512-BF16/AMX units, when it has them), torch.compile (inductor) and torch.compile with bf16. Inputs and
targets are random (the cost does not depend on pixel values); the crops go through the real augmentation.

Each setting is compiled and warmed up while the background jobs run, then timed for ``--seconds`` with
them paused (``bg-pause``; ``bg-resume`` always follows, also on an exception or SIGTERM), so no paused
window lasts longer than one setting's timing. bf16's numerical cost is shown as the smallest cosine between
its embeddings and fp32's for the same weights and inputs (a trained network's training curve is the real
test).

Run (one family at a time; results merge into the json):
    PYTHONPATH=$PWD .venv/bin/python bench/train_throughput.py --family squeezefacenet
Writes reports/train_throughput.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os

# Idle OpenMP threads sleep instead of spinning: on a shared machine spinning would bill another job's
# time slices to this process and blur the CPU-time figures below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import platform
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pruning.augment import augment
from pruning.models import FAMILIES, count_flops, count_params, create_model
from pruning.train import batch_tensor, distillation_loss

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_BUDGETS = (1_000_000, 5_000_000)


@dataclass(frozen=True)
class Setting:
    label: str
    channels_last: bool
    bf16: bool
    compile: bool


SETTINGS = (
    Setting("eager fp32", channels_last=False, bf16=False, compile=False),
    Setting("channels_last", channels_last=True, bf16=False, compile=False),
    Setting("channels_last + bf16", channels_last=True, bf16=True, compile=False),
    Setting("compile", channels_last=True, bf16=False, compile=True),
    Setting("compile + bf16", channels_last=True, bf16=True, compile=True),
)


@contextmanager
def paused(enabled: bool) -> Iterator[None]:
    """The background jobs stopped for the duration; resumed whatever happens (SIGTERM included)."""
    if not enabled:
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    subprocess.run(["bg-pause"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["bg-resume"], check=False, capture_output=True)
        signal.signal(signal.SIGTERM, previous)


def cpu_info() -> tuple[str, dict[str, bool]]:
    """The CPU's model name and whether it has the vector/matrix units bf16 autocast can use."""
    name, flags = platform.machine(), set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == platform.machine():
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return name, {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")}


class Step:
    """One training step of ``family`` under ``setting``; fresh weights and optimiser per setting."""

    def __init__(self, family: str, setting: Setting, batch: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.setting = setting
        self.model = create_model(family=family).train()
        if setting.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=5e-4)
        self.forward = torch.compile(self.model) if setting.compile else self.model
        rng = np.random.default_rng(seed)
        self.crops = rng.integers(0, 256, size=(4 * batch, 112, 112, 3), dtype=np.uint8)
        self.targets = F.normalize(torch.randn(4 * batch, 128), dim=1)
        self.batch = batch
        self.count = 0

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = (self.count % 4) * self.batch
        x = augment(
            batch_tensor(self.crops[start : start + self.batch]), torch.Generator().manual_seed(self.count)
        )
        if self.setting.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.targets[start : start + self.batch]

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.setting.bf16 else nullcontext()

    def __call__(self) -> tuple[float, float, float]:
        """(seconds of the whole step, of it on input and augmentation, CPU seconds of the whole step)."""
        start, cpu = time.perf_counter(), time.process_time()
        x, targets = self.inputs()
        data_done = time.perf_counter()
        with self.autocast():
            out = self.forward(x)
        loss, _ = distillation_loss(out.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.count += 1
        return time.perf_counter() - start, data_done - start, time.process_time() - cpu

    def bf16_cosine(self) -> float | None:
        """Smallest cosine between this setting's eval embeddings and fp32's (None when not bf16)."""
        if not self.setting.bf16:
            return None
        self.model.eval()
        x, _ = self.inputs()
        with torch.no_grad():
            reference = F.normalize(self.model(x), dim=1)
            with self.autocast():
                low = F.normalize(self.model(x).float(), dim=1)
        self.model.train()
        return float((reference * low).sum(dim=1).min())


def time_setting(
    family: str, setting: Setting, batch: int, seconds: float, warmup: int, pause: bool
) -> dict[str, object]:
    step = Step(family, setting, batch)
    started = time.perf_counter()
    for _ in range(warmup):  # compilation (forward and backward graphs) and allocator warm-up, unpaused
        step()
    warmup_s = time.perf_counter() - started
    times, data, cpu_times = [], [], []
    with paused(pause):
        window, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - window < seconds or len(times) < 3:
            total, data_s, cpu_s = step()
            times.append(total)
            data.append(data_s)
            cpu_times.append(cpu_s)
        wall = time.perf_counter() - window
        cpu_share = (time.process_time() - cpu) / (wall * torch.get_num_threads())
        load = os.getloadavg()[0]
    threads = torch.get_num_threads()
    # From the median step: robust to another engineer's job taking the cores for a few steps.
    measured = batch / statistics.median(times)
    # What the step costs in CPU time, spread over `threads` cores: the rate of a quiet machine if the
    # threads scaled perfectly (an upper bound; equal to the measured rate when CPU share is ~1).
    projected = batch * threads / statistics.median(cpu_times)
    rate = projected
    return {
        **asdict(setting),
        "steps": len(times),
        "images_per_s": rate,
        "images_per_s_measured": measured,
        "images_per_s_mean": batch * len(times) / sum(times),
        "cpu_ms_median": 1e3 * statistics.median(cpu_times),
        "cpu_share": cpu_share,
        "load_average_1min": load,
        "step_ms_median": 1e3 * statistics.median(times),
        "data_ms_median": 1e3 * statistics.median(data),
        "warmup_s": warmup_s,
        "bf16_min_cosine": step.bf16_cosine(),
        "samples_per_hour": rate * 3600,
        **{f"hours_for_{n // 1_000_000}M": n / rate / 3600 for n in SAMPLE_BUDGETS},
    }


def write_report(results: dict[str, object], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, dict] = results["families"]  # type: ignore[assignment]
    machine: dict = results["machine"]  # type: ignore[assignment]
    cpus: dict[str, dict[str, bool]] = results["cpus"]  # type: ignore[assignment]
    used = {row["cpu"] for record in families.values() for row in record["settings"]}
    lines = [
        "# Training throughput per embedder family (CPU)",
        "",
        "`PYTHONPATH=$PWD .venv/bin/python bench/train_throughput.py --family FAMILY` "
        "(bench/train_throughput.py): one `faceverify train` step — batch "
        f"{machine['batch']}, augmentation, distillation loss, backward, AdamW — on {machine['threads']} "
        "threads, background jobs paused while timing. Sessions run on different machines: each row names "
        "its CPU, and settings compare only within one CPU. "
        + "; ".join(
            f"{cpu}: flags {', '.join(k for k, v in on.items() if v)}"
            for cpu, on in cpus.items()
            if cpu in used
        )
        + f"; torch {machine['torch']}.",
        "",
        "| family | CPU | params | MFLOPs/img | setting | img/s (CPU time) | img/s measured | CPU share "
        "| load | step ms | data ms | warm-up s | bf16 min cos | samples/h | h for 1M | h for 5M |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, record in families.items():
        for row in record["settings"]:
            cosine = "" if row["bf16_min_cosine"] is None else f"{row['bf16_min_cosine']:.4f}"
            lines.append(
                f"| {name} | {row['cpu']} "
                f"| {record['params'] / 1e6:.2f}M | {record['flops'] / 1e6:.0f} | {row['label']} | "
                f"{row['images_per_s']:.1f} | {row['images_per_s_measured']:.1f} | {row['cpu_share']:.2f} | "
                f"{row['load_average_1min']:.1f} | {row['step_ms_median']:.0f} | "
                f"{row['data_ms_median']:.0f} | {row['warmup_s']:.0f} | {cosine} | "
                f"{row['samples_per_hour'] / 1e3:.0f}k | "
                f"{row['hours_for_1M']:.1f} | {row['hours_for_5M']:.1f} |"
            )
    lines += ["", "## Budget plan (fastest setting per family)", ""]
    lines += [
        "| family | fastest setting | img/s (CPU time) | vs eager fp32 | h for 1M samples "
        "| h for 5M samples |"
    ]
    lines += ["|---|---|---:|---:|---:|---:|"]
    for name, record in families.items():
        rows = record["settings"]
        best = max(rows, key=lambda r: r["images_per_s"])
        eager = next((r for r in rows if r["label"] == "eager fp32" and r["cpu"] == best["cpu"]), None)
        gain = f"{best['images_per_s'] / eager['images_per_s']:.2f}×" if eager else ""
        lines.append(
            f"| {name} | {best['label']} | {best['images_per_s']:.1f} | {gain} | "
            f"{best['hours_for_1M']:.1f} | {best['hours_for_5M']:.1f} |"
        )
    lines += [
        "",
        "**img/s (CPU time)** = batch × threads / median CPU seconds of a step: what the step costs, spread "
        "over the cores — the rate of a quiet machine if the threads scale perfectly (an upper bound), and "
        "the figure the budget columns use. **img/s measured** = batch / median wall seconds of a step. They "
        "agree when the CPU share (the process's CPU time over wall time × threads in the timed window) is "
        "near 1; below that, other work (other engineers' tests and benchmarks: only the project's "
        "background jobs are paused) held the cores. OpenMP threads wait passively "
        "(OMP_WAIT_POLICY=PASSIVE) so that spinning does not bill other jobs' time to the step. "
        "load: the 1-minute load average at the end of the window. "
        "Samples are augmented crops seen by the optimiser (steps × batch); 1M samples is about 10 epochs of "
        "100k crops. Figures are for the whole machine: a second job on the same 2 cores halves them. "
        "bf16 min cos: the smallest cosine between bf16-autocast and fp32 embeddings of the same batch "
        "through the same (untrained) weights — a numerical check, not a convergence test.",
        "",
        "![throughput](train_throughput.png)",
        "",
    ]
    (out / "train_throughput.md").write_text("\n".join(lines))

    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    labels = [s.label for s in SETTINGS]
    width = 0.8 / max(1, len(families))
    for offset, (name, record) in enumerate(families.items()):
        rate = {r["label"]: r["images_per_s"] for r in record["settings"]}
        xs = [i + offset * width for i in range(len(labels))]
        ax.bar(xs, [rate.get(label, 0) for label in labels], width, label=name)
    ax.set_xticks([i + width * (len(families) - 1) / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_ylabel("training images / s")
    ax.set_yscale("log")
    ax.set_title(f"training throughput, batch {machine['batch']}, {machine['threads']} threads")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out / "train_throughput.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=list(FAMILIES), required=True)
    parser.add_argument("--settings", nargs="+", choices=[s.label for s in SETTINGS])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="timed (paused) window per setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--no-pause", action="store_true", help="do not pause the background jobs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pause = not args.no_pause and shutil.which("bg-pause") is not None
    json_path = args.out / "train_throughput.json"
    results = json.loads(json_path.read_text()) if json_path.exists() else {"families": {}}
    # Sessions land on different machines: every row names its CPU (rows from before this was recorded
    # get the machine the file named then), and the flags of every CPU seen are kept.
    cpus = results.setdefault("cpus", {})
    for record in results["families"].values():
        before = record.pop("machine", None) or results.get("machine")
        for row in record["settings"]:
            if "cpu" not in row and before is not None:
                row["cpu"] = before["cpu"]
                cpus.setdefault(before["cpu"], before["cpu_flags"])
    cpu, flags = cpu_info()
    cpus[cpu] = flags
    results["machine"] = {
        "cpu": cpu,
        "cpu_flags": flags,
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "background_paused": pause,
    }
    model = create_model(family=args.family)
    order = [s.label for s in SETTINGS]
    entry = results["families"].setdefault(args.family, {"settings": []})
    entry |= {"params": count_params(model), "flops": count_flops(model)}
    for setting in SETTINGS:
        if args.settings is not None and setting.label not in args.settings:
            continue
        row = time_setting(args.family, setting, args.batch, args.seconds, args.warmup, pause) | {"cpu": cpu}
        print(json.dumps({"family": args.family, **row}), flush=True)
        # Written after every setting: a long run interrupted later keeps what it measured.
        kept = [r for r in entry["settings"] if r["label"] != setting.label]
        entry["settings"] = sorted([*kept, row], key=lambda r: order.index(r["label"]))
        json_path.write_text(json.dumps(results, indent=2) + "\n")
        write_report(results, args.out)


if __name__ == "__main__":
    main()
