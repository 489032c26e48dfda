"""Pruning report: every level of every criterion, measured the same way, in one table with figures.

Run (after ``faceverify prune`` for each criterion):
    .venv/bin/python bench/pruning_report.py --dense runs/dense/best.pt \\
        --run taylor=runs/prune-taylor --run l1=runs/prune-l1 --run random=runs/prune-random

Each checkpoint is exported to ONNX and measured on those bytes (pruning/publish.py ``measured``): LFW View 2
through the harness, the FMR = 1e-3 threshold from the held-out validation identities, ONNX size, and
embedding latency with ONNX Runtime on one thread at batch 1 and 32. Measurements are cached in
reports/pruning/measurements.json by checkpoint hash, so a rerun only measures what is new.
Writes reports/pruning.md and reports/pruning/*.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from reporting import write_with_reading  # bench/reporting.py (bench/ is on sys.path as a script)

from model_store import ModelStore
from model_store.store import sha256_file
from pruning.checkpoint import load_checkpoint
from pruning.data.paths import data_root
from pruning.export import export_onnx
from pruning.publish import Benchmark, measured

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "datasets" / "lfw"


def latency_ms(onnx_path: Path, batch: int, iters: int) -> float:
    """Median milliseconds per call on one ORT thread (the serving configuration per worker)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(batch, 3, 112, 112)).astype(np.float32)
    for _ in range(5):
        session.run(None, {"input": x})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


ACCURACY_KEYS = ("lfw_accuracy", "lfw_fold_accuracies", "val_tar_at_fmr_1e-3")


def latencies(onnx_path: Path, iters: tuple[int, int]) -> dict[str, float]:
    """The two latencies every row reports: batch 1 and batch 32, ``iters`` calls each."""
    return {
        "latency_b1_ms": latency_ms(onnx_path, 1, iters[0]),
        "latency_b32_ms": latency_ms(onnx_path, 32, iters[1]),
    }


def default_benchmark() -> Benchmark:
    """LFW View 2 (benchmark only) and the project's crop cache (validation identities)."""
    root = data_root()
    return Benchmark(root / "crops", LFW / "pairs.txt", LFW / "images", cache_dir=root / "eval-cache")


def measure(
    checkpoint: Path,
    cache: dict[str, dict],
    store: ModelStore,
    benchmark: Benchmark | None = None,
    latency_iters: tuple[int, int] = (200, 20),
    flip_fusion: bool = False,
    retime: bool = False,
) -> dict[str, object]:
    """Every figure of one checkpoint; cached by its hash (and whether the graph fuses the mirror image). An
    entry written before a figure was added gets the missing accuracy figures only (its latencies stay: they
    were timed on a quiet machine). ``retime``: time it again whatever the cache holds (latencies first taken
    while other jobs ran on the cores); cached accuracy figures are kept."""
    key = sha256_file(checkpoint)[:16] + ("-flip" if flip_fusion else "")
    if key in cache and all(k in cache[key] for k in ACCURACY_KEYS):
        if retime:
            model, _ = load_checkpoint(checkpoint)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                export_onnx(model, path, flip_fusion=flip_fusion)
                cache[key] |= latencies(path, latency_iters)
        return cache[key]
    earlier = cache.get(key, {})
    benchmark = benchmark or default_benchmark()
    with measured(checkpoint, benchmark, store=store, flip_fusion=flip_fusion) as m:
        from pruning.models import count_flops, count_params

        record = m.checkpoint.record or {}
        timed = {k: earlier[k] for k in ("latency_b1_ms", "latency_b32_ms") if k in earlier}
        if len(timed) < 2 or retime:
            timed = latencies(m.onnx_path, latency_iters)
        cache[key] = {
            "checkpoint": str(checkpoint),
            "params": count_params(m.model),
            "flops": count_flops(m.model),
            "onnx_kb": m.onnx_path.stat().st_size / 1024,
            "onnx_bytes": m.onnx_path.stat().st_size,
            "family": m.model.family,
            **timed,
            "lfw_accuracy": m.lfw["accuracy_mean"],
            "lfw_fold_accuracies": m.lfw["fold_accuracies"],
            "lfw_accuracy_std": m.lfw["accuracy_std"],
            "lfw_tar_at_far_1e-3": m.lfw["tar_at_far_1e-3"],
            "lfw_eer": m.lfw["eer"],
            "threshold_fmr_1e-3": m.validation["thresholds"].get("1e-3"),  # type: ignore[union-attr]
            "val_tar_at_fmr_1e-3": m.validation.get("tar_at_fmr_1e-3"),
            "removed_share": record.get("removed_share", 0.0),
            "filters": record.get("filters"),
        }
    return cache[key]


def layer_order_analysis(history: list[dict], original: dict[str, int]) -> dict[str, object]:
    """Do the widest layers lose filters first? Spearman correlation of width with share removed."""
    from scipy.stats import spearmanr

    names = list(original)
    widths = [original[n] for n in names]
    out: dict[str, object] = {}
    for record in history[1:]:
        share = [1 - record["filters"][n] / original[n] for n in names]
        rho, p = spearmanr(widths, share)
        out[str(record["iteration"])] = {"spearman_rho": float(rho), "p_value": float(p)}
    first = history[1]
    first_share = {n: 1 - first["filters"][n] / original[n] for n in names}
    thinned = [n for n in sorted(first_share, key=first_share.get, reverse=True) if first_share[n] > 0]  # type: ignore[arg-type]
    out["first_iteration_top5"] = thinned[:5]
    return out


def within_tolerance(rows: list[dict], tolerance_pp: float) -> list[str]:
    """Per criterion, the smallest variant within ``tolerance_pp`` of the dense model's LFW accuracy."""
    dense = rows[0]
    lines = [f"Smallest variant within {tolerance_pp} pp of the dense LFW accuracy, per criterion:", ""]
    for criterion in dict.fromkeys(r["criterion"] for r in rows[1:]):
        close = [
            r
            for r in rows
            if r["criterion"] == criterion
            and 100 * (r["lfw_accuracy"] - dense["lfw_accuracy"]) >= -tolerance_pp
        ]
        if not close:
            lines.append(f"- {criterion}: none")
            continue
        best = min(close, key=lambda r: r["params"])
        lines.append(
            f"- {criterion}: {best['variant']}, {best['params']:,} params "
            f"({100 * (1 - best['params'] / dense['params']):.1f} % fewer), "
            f"{100 * (best['lfw_accuracy'] - dense['lfw_accuracy']):+.2f} pp, "
            f"{best['latency_b1_ms']:.2f} ms b1 (dense {dense['latency_b1_ms']:.2f})"
        )
    return lines


def criterion_comparison(rows: list[dict], first: str, second: str) -> list[str]:
    """``first`` against ``second`` level by level: paired over the 10 LFW folds (same pairs, same
    thresholding protocol), on the larger validation split, and at equal parameter count."""
    from scipy.stats import ttest_rel

    by_level = {
        criterion: {r["variant"].rsplit("-", 1)[1]: r for r in rows if r["criterion"] == criterion}
        for criterion in (first, second)
    }
    curve = sorted((r for r in rows if r["criterion"] in (second, "dense")), key=lambda r: r["params"])
    lines = [
        f"## {first} against {second}",
        "",
        "Paired over the 10 LFW folds (Δ = mean of per-fold accuracy differences ± their standard deviation; "
        "paired t-test); Δ validation TAR@FMR1e-3 on 7,204 genuine / 1.25 M impostor pairs of held-out "
        f"identities; and {second}'s LFW accuracy interpolated at {first}'s parameter count.",
        "",
        f"| level | Δ LFW acc (pp) | folds {first} ≥ {second} | p | Δ val TAR@FMR1e-3 "
        f"| {first} params | {second} acc at equal params | {first} acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level in sorted(set(by_level[first]) & set(by_level[second]), key=int):
        a, b = by_level[first][level], by_level[second][level]
        diff = 100 * (np.array(a["lfw_fold_accuracies"]) - np.array(b["lfw_fold_accuracies"]))
        p_value = float(ttest_rel(a["lfw_fold_accuracies"], b["lfw_fold_accuracies"]).pvalue)
        at_equal = np.interp(a["params"], [r["params"] for r in curve], [r["lfw_accuracy"] for r in curve])
        lines.append(
            f"| {level} % | {diff.mean():+.2f} ± {diff.std(ddof=1):.2f} | {int((diff >= 0).sum())}/10 | "
            f"{p_value:.2f} | {a['val_tar_at_fmr_1e-3'] - b['val_tar_at_fmr_1e-3']:+.3f} | {a['params']:,} | "
            f"{100 * at_equal:.2f} | {100 * a['lfw_accuracy']:.2f} |"
        )
    return [*lines, ""]


def plot_tradeoffs(rows: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for x_key, label, name in (
        ("params", "parameters", "accuracy_vs_params.png"),
        ("latency_b1_ms", "embedding latency, batch 1, 1 thread (ms)", "accuracy_vs_latency.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
        for criterion in sorted({r["criterion"] for r in rows if r["criterion"] != "dense"}):
            points = sorted(
                (r for r in rows if r["criterion"] in (criterion, "dense")), key=lambda r: -r[x_key]
            )
            ax.plot(
                [p[x_key] for p in points], [100 * p["lfw_accuracy"] for p in points], "o-", label=criterion
            )
        ax.set_xlabel(label)
        ax.set_ylabel("LFW accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)


def plot_layers(history: list[dict], original: dict[str, int], out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(original)
    share = np.array([[1 - h["filters"][n] / original[n] for n in names] for h in history])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5), dpi=110, gridspec_kw={"width_ratios": [2.2, 1]})
    image = ax1.imshow(share.T, aspect="auto", cmap="magma", vmin=0, vmax=max(0.01, share.max()))
    ax1.set_yticks(range(len(names)), names, fontsize=7)
    ax1.set_xlabel("iteration")
    ax1.set_title("share of each layer's filters removed (Taylor)")
    fig.colorbar(image, ax=ax1)
    ax2.scatter([original[n] for n in names], share[-1], c="tab:red", label="last iteration")
    ax2.scatter(
        [original[n] for n in names], share[1] if len(share) > 1 else share[-1], c="tab:blue", label="first"
    )
    ax2.set_xscale("log")
    ax2.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # the widths themselves, legibly
    ax2.set_xticks(sorted(set(original.values())), [str(w) for w in sorted(set(original.values()))])
    ax2.set_xlabel("layer's original output channels")
    ax2.set_ylabel("share removed")
    ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", type=Path, required=True)
    parser.add_argument("--run", action="append", default=[], help="criterion=RUN_DIR (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument(
        "--flip-fusion",
        action="store_true",
        help="measure every network as published with --flip-fusion (crop and mirror fused in the graph)",
    )
    parser.add_argument(
        "--published",
        action="append",
        default=[],
        metavar="ROW=VARIANT",
        help="a row that is in the store, e.g. taylor-30=squeezerfacenet-taylor-30@9 (repeatable)",
    )
    parser.add_argument(
        "--retime", action="store_true", help="time every network again (cached accuracy figures are kept)"
    )
    args = parser.parse_args()
    published = dict(spec.split("=", 1) for spec in args.published)

    out_dir = args.out / "pruning"
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / "measurements.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    store = ModelStore()

    flip = args.flip_fusion

    def measured_row(checkpoint: Path) -> dict[str, object]:
        return measure(checkpoint, cache, store, flip_fusion=flip, retime=args.retime)

    rows = [{"criterion": "dense", "variant": "dense", **measured_row(args.dense)}]
    cache_path.write_text(json.dumps(cache, indent=2) + "\n")
    analyses = {}
    for spec in args.run:
        criterion, run_dir = spec.split("=", 1)
        run_dir = Path(run_dir)
        for checkpoint in sorted(run_dir.glob("level-*.pt")):
            rows.append(
                {
                    "criterion": criterion,
                    "variant": f"{criterion}-{checkpoint.stem[6:]}",
                    **measured_row(checkpoint),
                }
            )
            cache_path.write_text(json.dumps(cache, indent=2) + "\n")
        history_path = run_dir / "history.json"
        if history_path.exists():
            history = json.loads(history_path.read_text())
            analyses[criterion] = layer_order_analysis(history["history"], history["original_filters"])
            if criterion == "taylor":
                plot_layers(
                    history["history"], history["original_filters"], out_dir / "filters_per_layer.png"
                )
    plot_tradeoffs(rows, out_dir)

    dense = rows[0]
    lines = [
        "# Taylor pruning of SqueezeFaceNet",
        "",
        "`python bench/pruning_report.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "LFW View 2 10-fold accuracy through the evaluation harness on each variant's exported ONNX"
        + (" (crop and mirror image fused inside the graph, as published)" if flip else "")
        + ";",
        "threshold and validation TAR at FMR = 1e-3 on held-out validation identities (not LFW);",
        "latency = ONNX Runtime, 1 thread (why it falls less than FLOPs: `channel_alignment.md`).",
        "Published rows: "
        + (", ".join(f"{row} as `{variant}`" for row, variant in published.items()) or "none")
        + "; the others are not in the store.",
        "",
        "| variant | filters removed | params | FLOPs (M) | ONNX (KB) | ms b1 | ms b32 | LFW acc "
        "| Δ vs dense (pp) | TAR@FAR1e-3 | val TAR@FMR1e-3 | threshold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = 100 * (r["lfw_accuracy"] - dense["lfw_accuracy"])
        lines.append(
            f"| {r['variant']} | {100 * r['removed_share']:.0f} % | {r['params']:,} | "
            f"{r['flops'] / 1e6:.1f} | "
            f"{r['onnx_kb']:.0f} | {r['latency_b1_ms']:.2f} | {r['latency_b32_ms']:.1f} | "
            f"{100 * r['lfw_accuracy']:.2f} ± {100 * r['lfw_accuracy_std']:.2f} | {delta:+.2f} | "
            f"{r['lfw_tar_at_far_1e-3']:.3f} | {r['val_tar_at_fmr_1e-3']:.3f} | "
            f"{r['threshold_fmr_1e-3']:.3f} |"
        )
    lines += ["", *within_tolerance(rows, tolerance_pp=0.5)]
    lines += [
        "",
        "![accuracy vs params](pruning/accuracy_vs_params.png)",
        "",
        "![accuracy vs latency](pruning/accuracy_vs_latency.png)",
        "",
    ]
    criteria = [r["criterion"] for r in rows]
    for criterion in dict.fromkeys(c for c in criteria if c.startswith("taylor")):
        for baseline in ("l1", "random"):
            if baseline in criteria:
                lines += criterion_comparison(rows, criterion, baseline)
    if "taylor" in analyses:
        lines += [
            "## Which layers lose filters first",
            "",
            "![filters per layer](pruning/filters_per_layer.png)",
            "",
        ]
    for criterion, analysis in analyses.items():
        lines.append(
            f"- {criterion}: first iteration's most-thinned layers {analysis['first_iteration_top5']}; "
            "Spearman ρ(layer width, share removed) by iteration: "
            + ", ".join(f"{k}: {v['spearman_rho']:+.2f}" for k, v in analysis.items() if isinstance(v, dict))
        )
    write_with_reading(args.out / "pruning.md", lines)
    (out_dir / "summary.json").write_text(
        json.dumps({"rows": rows, "layer_analysis": analyses}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
