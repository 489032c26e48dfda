"""int8 variants beside their float parents: ORT latency (1 thread, batch 1 and 32) and LFW, from the store.

Run (the background jobs paused while timing, resumed whatever happens):
    bash -c 'bg-pause; trap bg-resume EXIT; .venv/bin/python bench/int8.py'
LFW comes from `faceverify eval --variant REF --json reports/eval/lfw-REF.json` (one per variant, the same
harness and detector cache for all); a variant without that file is reported without LFW.
Writes reports/int8.json, reports/int8.md and reports/int8.png.

Latency is of the published bytes, verified and loaded as the service loads them (``Embedder``): one
ONNX Runtime session per variant, intra-op 1 thread, the same real aligned crops for every variant. The
variants are timed in interleaved rounds, so drift of this shared machine hits float and int8 alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from faces.embed import Embedder
from model_store import DEFAULT_ROOT, ModelStore

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
DEFAULT_PAIRS = [
    "squeezefacenet@3=squeezefacenet-int8",
    "squeezerfacenet-taylor-30@3=squeezerfacenet-taylor-30-int8",
]
LFW_COMMAND = (
    "faceverify eval --variant {ref} --pairs ../shared/datasets/lfw/pairs.txt "
    "--images-root ../shared/datasets/lfw/images --json reports/eval/lfw-{ref}.json"
)


def real_crops(n: int) -> np.ndarray:
    """Aligned 112×112 crops of the test photos (tiled to ``n``), through the serving detector/aligner."""
    from faces.align import align_face
    from faces.decode import decode_image
    from faces.detect import DetectorConfig, MTCNNDetector

    detector = MTCNNDetector.from_store(ModelStore(DEFAULT_ROOT), "mtcnn", DetectorConfig())
    crops = []
    for path in sorted((ROOT / "tests/data/e2e/deepface").glob("*.jpg")):
        image = decode_image(path.read_bytes(), max_pixels=50_000_000)
        faces = detector.detect(image)
        if faces:
            crops.append(align_face(image, max(faces, key=lambda f: f.area).landmarks, "arcface_112"))
    return np.stack([crops[i % len(crops)] for i in range(n)])


def time_variants(embedders: dict[str, Embedder], crops: np.ndarray, rounds: int) -> dict[str, dict]:
    plan = {1: 100, 32: 8}  # runs per round and batch size: ~0.3 s of work per variant and round
    samples: dict[str, dict[int, list[float]]] = {ref: {b: [] for b in plan} for ref in embedders}
    for embedder in embedders.values():  # warm-up: first runs allocate
        for batch in plan:
            for _ in range(3):
                embedder.embed(crops[:batch])
    for _ in range(rounds):
        for ref, embedder in embedders.items():
            for batch, runs in plan.items():
                x = crops[:batch]
                for _ in range(runs):
                    start = time.perf_counter()
                    embedder.embed(x)
                    samples[ref][batch].append(time.perf_counter() - start)
    return {
        ref: {
            f"b{batch}": {
                "p50_ms": 1000 * float(np.percentile(values, 50)),
                "p90_ms": 1000 * float(np.percentile(values, 90)),
                "runs": len(values),
            }
            for batch, values in by_batch.items()
        }
        for ref, by_batch in samples.items()
    }


def lfw_of(ref: str, eval_dir: Path, store: ModelStore) -> dict[str, object] | None:
    """`faceverify eval`'s JSON of ``ref`` if there is one, else what its manifest recorded.

    Both come from ``faces.evaluation.evaluate`` on the same bytes (``faceverify quantize --pairs`` and
    ``faceverify publish`` run it before publishing); ``source`` says which one a figure is.
    """
    keys = ("accuracy_mean", "accuracy_std", "tar_at_far_1e-3", "auc", "n_pairs")
    path = eval_dir / f"lfw-{ref}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return {k: data[k] for k in keys} | {"source": str(path.relative_to(ROOT))}
    recorded = store.manifest(ref).metrics.get("lfw")
    if recorded is None:
        return None
    return {k: recorded[k] for k in keys} | {"source": f"{ref} manifest metrics.lfw"}


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    labels = [r["parent"].split("@")[0].replace("squeezerfacenet-", "") for r in rows]
    x = np.arange(len(rows))
    for ax, batch in zip(axes[:2], ("b1", "b32"), strict=True):
        fl = [r["float"]["latency"][batch]["p50_ms"] for r in rows]
        q = [r["int8"]["latency"][batch]["p50_ms"] for r in rows]
        ax.bar(x - 0.2, fl, 0.4, label="float")
        ax.bar(x + 0.2, q, 0.4, label="int8")
        for i, (a, b) in enumerate(zip(fl, q, strict=True)):
            ax.text(i + 0.2, b, f"×{a / b:.2f}", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(x, labels)
        ax.set_ylabel("ms (p50, ORT, 1 thread)")
        ax.set_title(f"batch {batch[1:]}")
        ax.legend()
    ax = axes[2]
    fl = [100 * (r["float"]["lfw"] or {}).get("accuracy_mean", np.nan) for r in rows]
    q = [100 * (r["int8"]["lfw"] or {}).get("accuracy_mean", np.nan) for r in rows]
    ax.bar(x - 0.2, fl, 0.4, label="float")
    ax.bar(x + 0.2, q, 0.4, label="int8")
    finite = [v for v in fl + q if np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 1.5, max(finite) + 0.5)
    ax.set_xticks(x, labels)
    ax.set_ylabel("LFW accuracy %")
    ax.set_title("LFW View 2 (10 folds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def write_markdown(report: dict, out: Path) -> None:
    first = report["rows"][0]["float"]["latency"]
    lines = [
        "# int8 variants (ONNX Runtime static quantisation) beside their float parents",
        "",
        "`faceverify quantize REF` (`pruning/quantize.py`): QDQ format, int8 weights per output channel,",
        "uint8 activations per tensor, ranges calibrated (MinMax) on crops of the identity-held-out",
        "**validation**",
        "split of the crop cache, and a threshold of its own calibrated on the whole validation split.",
        "LFW only benchmarks (never calibrates). Numbers below are produced from the published bytes by:",
        "",
        "```sh",
        report["command"],
        *[
            LFW_COMMAND.format(ref=r[kind]["ref"])
            for r in report["rows"]
            for kind in ("float", "int8")
            if r[kind]["lfw"] and r[kind]["lfw"]["source"].startswith("reports/")
        ],
        "```",
        "",
        "LFW figures: "
        + "; ".join(
            f"`{r[kind]['ref']}` from {r[kind]['lfw']['source']}"
            for r in report["rows"]
            for kind in ("float", "int8")
            if r[kind]["lfw"]
        )
        + ".",
        "",
        f"Machine: {report['machine']}; ORT {report['onnxruntime']}, intra-op 1 thread, inter-op 1; "
        f"{report['rounds']} interleaved rounds (batch 1: {first['b1']['runs']} "
        f"runs, batch 32: {first['b32']['runs']} runs per variant); "
        f"load average at start {report['loadavg']}.",
        "",
        "| variant | bytes | b1 p50 ms | b32 p50 ms | speed-up b1 / b32 | LFW | Δ LFW | "
        "val TAR@FMR1e-3 | threshold 1e-3 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        for kind in ("float", "int8"):
            item = row[kind]
            lat, lfw = item["latency"], item["lfw"]
            speed = ""
            delta = ""
            if kind == "int8":
                f_lat = row["float"]["latency"]
                speed = (
                    f"×{f_lat['b1']['p50_ms'] / lat['b1']['p50_ms']:.2f} / "
                    f"×{f_lat['b32']['p50_ms'] / lat['b32']['p50_ms']:.2f}"
                )
                if lfw and row["float"]["lfw"]:
                    delta = f"{100 * (lfw['accuracy_mean'] - row['float']['lfw']['accuracy_mean']):+.2f} pp"
            lfw_text = f"{100 * lfw['accuracy_mean']:.2f} ± {100 * lfw['accuracy_std']:.2f} %" if lfw else "—"
            tar = item.get("val_tar")
            b1, b32 = lat["b1"]["p50_ms"], lat["b32"]["p50_ms"]
            lines.append(
                f"| `{item['ref']}` | {item['bytes']:,} | {b1:.2f} | {b32:.1f} "
                f"| {speed} | {lfw_text} | {delta} | {f'{tar:.3f}' if tar is not None else '—'} "
                f"| {item['threshold']:.4f} |"
            )
    lines += [
        "",
        "val TAR: both rows on the same validation crops, as recorded in the int8 manifest "
        "(`metrics.int8_vs_parent.parent_tar_at_fmr_1e-3` for the float parent; the float manifests' own "
        "figure was measured on an older build of the crop cache).",
        "",
        "![latency and LFW](int8.png)",
        "",
    ]
    for row in report["rows"]:
        agreement = row["int8"]["agreement"]
        if agreement.get("min_cosine") is None:
            continue
        lines.append(
            f"- `{row['int8_ref']}` vs `{row['parent']}` on {agreement['crops']} validation crops: cosine "
            f"between the two embeddings min {agreement['min_cosine']:.4f}, "
            f"mean {agreement['mean_cosine']:.5f}."
        )
    lines.append("")
    out.write_text("\n".join(lines) + report.get("notes", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", help="FLOAT_REF=INT8_REF (default: the two published)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eval-dir", type=Path, default=REPORTS / "eval")
    parser.add_argument("--out", type=Path, default=REPORTS / "int8")
    parser.add_argument("--notes", type=Path, help="markdown appended to the report (findings, caveats)")
    args = parser.parse_args()
    store = ModelStore(DEFAULT_ROOT)
    pairs = [p.split("=", 1) for p in (args.pair or DEFAULT_PAIRS)]
    refs = [str(store.resolve(r)) for pair in pairs for r in pair]
    embedders = {ref: Embedder.from_store(store, ref, intra_op_threads=1) for ref in refs}
    crops = real_crops(32)
    loadavg = " ".join(f"{v:.2f}" for v in os.getloadavg())
    latency = time_variants(embedders, crops, args.rounds)
    rows = []
    for float_ref, int8_ref in pairs:
        f_ref, q_ref = str(store.resolve(float_ref)), str(store.resolve(int8_ref))
        q_manifest = store.manifest(q_ref)
        agreement = q_manifest.metrics.get("int8_vs_parent", {})
        row: dict[str, object] = {"parent": f_ref, "int8_ref": q_ref}
        for kind, ref in (("float", f_ref), ("int8", q_ref)):
            manifest = store.manifest(ref)
            val_tar = (
                agreement.get("parent_tar_at_fmr_1e-3")
                if kind == "float"
                else q_manifest.metrics["validation"].get("tar_at_fmr_1e-3")
            )
            row[kind] = {
                "ref": ref,
                "bytes": manifest.artifact.bytes,
                "latency": latency[ref],
                "lfw": lfw_of(ref, args.eval_dir, store),
                "val_tar": val_tar,
                "threshold": manifest.thresholds["1e-3"],
            }
        row["int8"]["agreement"] = {k: agreement.get(k) for k in ("crops", "min_cosine", "mean_cosine")}  # type: ignore[index]
        quantization = q_manifest.quantization
        row["int8"]["quantization"] = quantization.model_dump() if quantization else None  # type: ignore[index]
        rows.append(row)
    report = {
        "command": "bash -c 'bg-pause; trap bg-resume EXIT; .venv/bin/python bench/int8.py'",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "onnxruntime": ort.__version__,
        "rounds": args.rounds,
        "loadavg": loadavg,
        "rows": rows,
        "notes": args.notes.read_text() if args.notes else "",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    write_markdown(report, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
