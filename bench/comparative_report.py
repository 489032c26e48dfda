"""The comparative study: the same pruning schedule on SqueezeFaceNet, MobileNetV2 and ResNet-50, one table.

After Alonso-Fernandez et al. 2024 (https://arxiv.org/abs/2405.18302), who report that much of each network
can be pruned with little loss and that the layers with the most output channels lose filters first.

Run (after ``faceverify train --family F`` and ``faceverify prune`` per family and criterion):
    PYTHONPATH=$PWD .venv/bin/python bench/comparative_report.py \\
        --dense squeezefacenet=runs/dense/best.pt --run squeezefacenet:taylor=runs/prune-taylor \\
        --dense mobilenetv2=runs/mnv2/best.pt --run mobilenetv2:taylor=runs/mnv2-taylor \\
        --run mobilenetv2:l1=runs/mnv2-l1 --run mobilenetv2:random=runs/mnv2-random \\
        --dense resnet50=runs/r50/best.pt --run resnet50:taylor=runs/r50-taylor ...

Every checkpoint (dense and each ``level-XX.pt``) is exported to ONNX and measured on those bytes, as in
bench/pruning_report.py: parameters, FLOPs, ONNX bytes, ONNX Runtime latency on one thread at batch 1 and 32,
LFW View 2 accuracy and TAR@FAR 1e-3 through the harness (LFW is a benchmark only), and the FMR = 1e-3
threshold calibrated on the held-out validation identities. Measurements are cached by checkpoint hash in
``comparative/measurements.json``, so a rerun measures only what is new.

Which layers lose filters first, from each run's ``history.json`` (filters per prunable unit per iteration):
Spearman's ρ between a unit's width and the share of its filters removed — in that iteration (width before
it) and cumulatively (original width, share removed so far) — and a per-unit figure. The paper's finding is
confirmed for a network when the last iteration's cumulative ρ > 0 at p < 0.05, refuted when ρ < 0 at
p < 0.05, and otherwise not shown.

That ρ is not against "no order": the schedule itself favours wide units. ``round_to`` lets a unit give up
filters only in whole multiples, which wide units complete first, and the per-layer ℓ2 normalisation of
Taylor and L1 scores (Molchanov 2017) scales each unit's scores by about 1/sqrt(width). So each run is also
set against two null schedules run by the same ``lowest_filters`` on the same widths with uninformative
(i.i.d. uniform) scores — ``rounding`` (raw, as the random criterion) and ``rounding + ℓ2`` (normalised, as
Taylor and L1) — and the finding is credited to the network only where its ρ exceeds the null's (one-sided
p = share of simulated schedules with ρ at least the run's).

Writes reports/comparative.md and reports/comparative/*.{json,png}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pruning_report import default_benchmark, measure, plot_layers  # bench/ is on sys.path as a script
from reporting import write_with_reading

from model_store import ModelStore
from pruning.data.paths import data_root
from pruning.importance import lowest_filters, normalise_per_layer
from pruning.prune import filters_per_step, min_keep_of
from pruning.publish import Benchmark

ROOT = Path(__file__).resolve().parents[1]
STYLES = {"taylor": "-", "l1": "--", "random": ":"}


def spearman(x: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """ρ and its p-value; None where either side is constant (ρ undefined)."""
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    rho, p = spearmanr(x, y)
    return float(rho), float(p)


def layer_order(history: list[dict], original: dict[str, int]) -> dict[str, object]:
    """Per iteration: ρ(width, share removed) in that iteration and so far; the verdict; the first thinned."""
    names = list(original)
    iterations = []
    for before, record in itertools.pairwise(history):
        widths = [before["filters"][n] for n in names]
        step = [(before["filters"][n] - record["filters"][n]) / before["filters"][n] for n in names]
        so_far = [1 - record["filters"][n] / original[n] for n in names]
        rho_step, p_step = spearman(widths, step)
        rho_cum, p_cum = spearman([original[n] for n in names], so_far)
        iterations.append(
            {
                "iteration": record["iteration"],
                "removed_share": record["removed_share"],
                "rho_step": rho_step,
                "p_step": p_step,
                "rho_cumulative": rho_cum,
                "p_cumulative": p_cum,
            }
        )
    last = iterations[-1] if iterations else {}
    rho, p = last.get("rho_cumulative"), last.get("p_cumulative")
    verdict = "not shown" if rho is None or p is None or p >= 0.05 else "confirmed" if rho > 0 else "refuted"
    first_loss = {}  # the iteration at which each unit first lost a filter
    for record in history[1:]:
        for name in names:
            if name not in first_loss and record["filters"][name] < original[name]:
                first_loss[name] = record["iteration"]
    final = history[-1]["filters"]
    order = sorted(first_loss, key=lambda n: (first_loss[n], -(1 - final[n] / original[n])))
    return {
        "iterations": iterations,
        "verdict": verdict,
        "first_thinned": order[:5],
        "widest": sorted(names, key=lambda n: -original[n])[:5],
    }


NULLS = {"rounding": False, "rounding + ℓ2": True}  # null name: whether scores are ℓ2-normalised per unit


def applicable_null(criterion: str) -> str:
    """The null a criterion's run is held against: random scores are raw, Taylor and L1 normalised.

    A run named ``criterion-variant`` (``random-short``: another schedule) is its criterion's.
    """
    return "rounding" if criterion.partition("-")[0] == "random" else "rounding + ℓ2"


@dataclass
class NullSchedule:
    """What the run's schedule does to the units' widths when the scores carry no information."""

    rhos: list[float]  # per simulated schedule: cumulative ρ(original width, share removed)
    mean_share: dict[str, float]  # per unit: share of its filters removed, averaged over the simulations


def null_schedule(
    original: dict[str, int], config: dict, iterations: int, *, normalise: bool, sims: int, seed: int = 0
) -> NullSchedule:
    """``sims`` simulated schedules of ``iterations`` steps of the run's ``prune`` allocation
    (``lowest_filters`` with its per-step count, minimum widths and ``round_to``) on uniform-noise scores:
    no network, no training."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ignored = config.get("ignored_layers") or []
    per_step = filters_per_step(original, config["pruning_ratio"], config["iterative_steps"], ignored)
    min_keep = min_keep_of(original, config["min_keep_fraction"], ignored)
    names = list(original)
    rhos, share_sums = [], dict.fromkeys(names, 0.0)
    for _ in range(sims):
        widths = dict(original)
        for _ in range(iterations):
            scores = {n: torch.rand(widths[n], generator=generator) for n in names}
            plan = lowest_filters(
                normalise_per_layer(scores) if normalise else scores,
                per_step,
                min_keep={n: min(min_keep[n], widths[n]) for n in names},
                round_to=config.get("round_to", 1),
            )
            widths = {n: widths[n] - len(plan[n]) for n in names}
        shares = {n: 1 - widths[n] / original[n] for n in names}
        rho, _ = spearman([original[n] for n in names], list(shares.values()))
        rhos.append(0.0 if rho is None else rho)
        share_sums = {n: share_sums[n] + shares[n] for n in names}
    return NullSchedule(rhos, {n: share_sums[n] / sims for n in names})


def against_nulls(history: dict, sims: int) -> dict[str, dict[str, float | None]]:
    """The run's last cumulative ρ against each null schedule's distribution, and ρ(width, the run's share
    removed minus the null's): whether the scores thin wide units beyond what the schedule alone does."""
    original, records = history["original_filters"], history["history"]
    names = list(original)
    shares = {n: 1 - records[-1]["filters"][n] / original[n] for n in names}
    observed, _ = spearman([original[n] for n in names], list(shares.values()))
    result: dict[str, dict[str, float | None]] = {}
    for name, normalise in NULLS.items():
        null = null_schedule(original, history["config"], len(records) - 1, normalise=normalise, sims=sims)
        rhos = sorted(null.rhos)
        excess, p_excess = spearman(
            [original[n] for n in names], [shares[n] - null.mean_share[n] for n in names]
        )
        result[name] = {
            "mean": sum(rhos) / len(rhos),
            "p05": rhos[int(0.05 * (len(rhos) - 1))],
            "p95": rhos[int(0.95 * (len(rhos) - 1))],
            "p_exceeds": None
            if observed is None
            else (1 + sum(r >= observed for r in rhos)) / (1 + len(rhos)),
            "rho_excess": excess,
            "p_excess": p_excess,
        }
    return result


def within_tolerance(rows: list[dict], dense: dict, tolerance_pp: float) -> dict | None:
    """The most pruned level (largest share of filters removed) within ``tolerance_pp`` of the dense LFW."""
    close = [r for r in rows if 100 * (r["lfw_accuracy"] - dense["lfw_accuracy"]) >= -tolerance_pp]
    return max(close, key=lambda r: r["removed_share"]) if close else None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def plot_accuracy_vs_params(by_family: dict[str, list[dict]], teacher: dict | None, out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, (family, rows) in zip(colours, by_family.items(), strict=False):
        dense = next(r for r in rows if r["criterion"] == "dense")
        ax.plot(dense["params"], 100 * dense["lfw_accuracy"], "*", ms=12, color=colour)
        for criterion in dict.fromkeys(r["criterion"] for r in rows if r["criterion"] != "dense"):
            points = sorted(
                (r for r in rows if r["criterion"] in (criterion, "dense")), key=lambda r: -r["params"]
            )
            ax.plot(
                [r["params"] for r in points],
                [100 * r["lfw_accuracy"] for r in points],
                STYLES.get(criterion, "-."),
                marker="o",
                ms=3,
                color=colour,
                label=f"{family} {criterion}",
            )
    if teacher:
        ax.axhline(100 * teacher["accuracy_mean"], color="grey", lw=0.8, label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (★ dense)")
    ax.set_ylabel("LFW accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def plot_spearman(analyses: dict[str, dict[str, dict]], out_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(analyses)), figsize=(4.2 * max(1, len(analyses)), 3.4), dpi=110)
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (family, criteria) in zip(axes, analyses.items(), strict=False):
        for criterion, analysis in criteria.items():
            its = analysis["iterations"]
            for key, marker in (("rho_cumulative", "o"), ("rho_step", "x")):
                xs = [100 * i["removed_share"] for i in its if i[key] is not None]
                ys = [i[key] for i in its if i[key] is not None]
                ax.plot(xs, ys, STYLES.get(criterion, "-."), marker=marker, label=f"{criterion} {key[4:]}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylim(-1, 1)
        ax.set_title(family)
        ax.set_xlabel("filters removed so far (%)")
        ax.set_ylabel("Spearman ρ(width, share removed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def parse_runs(specs: list[str]) -> dict[str, dict[str, Path]]:
    runs: dict[str, dict[str, Path]] = defaultdict(dict)
    for spec in specs:
        key, _, path = spec.partition("=")
        family, _, criterion = key.partition(":")
        if not (family and criterion and path):
            raise SystemExit(f"--run wants FAMILY:CRITERION=RUN_DIR, not {spec!r}")
        runs[family][criterion] = Path(path)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense", action="append", default=[], help="FAMILY=CHECKPOINT (repeatable)")
    parser.add_argument("--run", action="append", default=[], help="FAMILY:CRITERION=RUN_DIR (repeatable)")
    parser.add_argument("--teacher-eval", type=Path, default=ROOT / "reports/eval/lfw-sface.json")
    parser.add_argument("--pairs", type=Path, help="default: LFW View 2 pairs.txt (benchmark only)")
    parser.add_argument("--images-root", type=Path, help="default: the LFW images")
    parser.add_argument("--crops-root", type=Path, help="default: $FACEVERIFY_DATA/crops")
    parser.add_argument("--eval-cache", type=Path, help="detector results of the pairs' photos, reused")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--store", type=Path, help="model store with the detector (default: the project's)")
    parser.add_argument("--latency-iters", type=int, nargs=2, default=(200, 20), metavar=("B1", "B32"))
    parser.add_argument("--tolerance-pp", type=float, default=0.5)
    parser.add_argument(
        "--null-sims", type=int, default=400, help="simulated schedules per null (layer order)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()

    dense_paths = dict(spec.split("=", 1) for spec in args.dense)
    runs = parse_runs(args.run)
    if missing := set(runs) - set(dense_paths):
        raise SystemExit(f"no --dense checkpoint for {', '.join(sorted(missing))}")
    benchmark = default_benchmark()
    if args.pairs or args.images_root or args.crops_root:
        benchmark = Benchmark(
            args.crops_root or data_root() / "crops",
            args.pairs or benchmark.lfw_pairs,
            args.images_root or benchmark.lfw_root,
            cache_dir=args.eval_cache,
            val_fraction=args.val_fraction,
        )
    store = ModelStore(args.store) if args.store else ModelStore()
    out_dir = args.out / "comparative"
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / "measurements.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    def measured_row(checkpoint: Path, criterion: str, variant: str) -> dict:
        row = measure(checkpoint, cache, store, benchmark, tuple(args.latency_iters))
        cache_path.write_text(json.dumps(cache, indent=2) + "\n")
        return {"criterion": criterion, "variant": variant, **row}

    by_family: dict[str, list[dict]] = {}
    analyses: dict[str, dict[str, dict]] = defaultdict(dict)
    for family, checkpoint in dense_paths.items():
        rows = [measured_row(Path(checkpoint), "dense", f"{family}")]
        for criterion, run_dir in runs.get(family, {}).items():
            for level in sorted(run_dir.glob("level-*.pt")):
                rows.append(measured_row(level, criterion, f"{family}-{criterion}-{level.stem[6:]}"))
            history_path = run_dir / "history.json"
            if history_path.exists():
                history = json.loads(history_path.read_text())
                analysis = layer_order(history["history"], history["original_filters"])
                analysis["nulls"] = against_nulls(history, args.null_sims)
                analyses[family][criterion] = analysis
                if criterion == "taylor":
                    plot_layers(
                        history["history"],
                        history["original_filters"],
                        out_dir / f"filters_per_layer-{family}.png",
                    )
        by_family[family] = rows
    teacher = json.loads(args.teacher_eval.read_text()) if args.teacher_eval.exists() else None
    plot_accuracy_vs_params(by_family, teacher, out_dir / "accuracy_vs_params.png")
    if analyses:
        plot_spearman(analyses, out_dir / "spearman.png")

    command = "python bench/comparative_report.py " + " ".join(
        [f"--dense {d}" for d in args.dense] + [f"--run {r}" for r in args.run]
    )
    lines = [
        "# Comparative study: the same pruning schedule on three face networks",
        "",
        f"`{command}`",
        "",
        "Each variant's exported ONNX measured on its bytes: LFW View 2 10-fold accuracy and TAR@FAR1e-3 "
        "through the harness (benchmark only), FMR = 1e-3 threshold calibrated on held-out validation "
        "identities, ONNX Runtime latency on 1 thread at batch 1 and 32. Pairs: "
        f"`{benchmark.lfw_pairs}`.",
        "",
        "## Dense networks",
        "",
        "| network | params | FLOPs (M) | ONNX (bytes) | ms b1 | ms b32 | LFW acc | TAR@FAR1e-3 "
        "| val TAR@FMR1e-3 |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    if teacher:
        lines.append(
            f"| teacher ({teacher.get('label', 'teacher')}) | — | — | — | — | — | "
            f"{100 * teacher['accuracy_mean']:.2f} ± {100 * teacher['accuracy_std']:.2f} | "
            f"{_fmt(teacher.get('tar_at_far_1e-3'), '.3f')} | — |"
        )
    for family, rows in by_family.items():
        d = rows[0]
        lines.append(
            f"| {family} | {d['params']:,} | {d['flops'] / 1e6:.1f} | {d['onnx_bytes']:,} | "
            f"{d['latency_b1_ms']:.2f} | {d['latency_b32_ms']:.1f} | "
            f"{100 * d['lfw_accuracy']:.2f} ± {100 * d['lfw_accuracy_std']:.2f} | "
            f"{_fmt(d['lfw_tar_at_far_1e-3'], '.3f')} | {_fmt(d['val_tar_at_fmr_1e-3'], '.3f')} |"
        )
    lines += ["", "![accuracy vs params](comparative/accuracy_vs_params.png)", ""]
    for family, rows in by_family.items():
        dense = rows[0]
        lines += [
            f"## {family}",
            "",
            "| variant | filters removed | params | FLOPs (M) | ONNX (bytes) | ms b1 | ms b32 | LFW acc "
            "| Δ vs dense (pp) | TAR@FAR1e-3 | val TAR@FMR1e-3 |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['variant']} | {100 * r['removed_share']:.0f} % | {r['params']:,} | "
                f"{r['flops'] / 1e6:.1f} | {r['onnx_bytes']:,} | {r['latency_b1_ms']:.2f} | "
                f"{r['latency_b32_ms']:.1f} | "
                f"{100 * r['lfw_accuracy']:.2f} ± {100 * r['lfw_accuracy_std']:.2f} | "
                f"{100 * (r['lfw_accuracy'] - dense['lfw_accuracy']):+.2f} | "
                f"{_fmt(r['lfw_tar_at_far_1e-3'], '.3f')} | "
                f"{_fmt(r['val_tar_at_fmr_1e-3'], '.3f')} |"
            )
        lines.append("")
        for criterion in dict.fromkeys(r["criterion"] for r in rows[1:]):
            best = within_tolerance(
                [r for r in rows if r["criterion"] == criterion], dense, args.tolerance_pp
            )
            lines.append(
                f"- {criterion}: most pruned level within {args.tolerance_pp} pp of dense: "
                + (
                    f"{best['variant']} ({100 * best['removed_share']:.0f} % of filters, "
                    f"{100 * (1 - best['params'] / dense['params']):.1f} % fewer parameters, "
                    f"{100 * (best['lfw_accuracy'] - dense['lfw_accuracy']):+.2f} pp)"
                    if best
                    else "none"
                )
            )
        lines.append("")
        for criterion, analysis in analyses.get(family, {}).items():
            last = analysis["iterations"][-1] if analysis["iterations"] else {}
            null = analysis["nulls"][applicable_null(criterion)]
            beyond = null["p_exceeds"] is not None and null["p_exceeds"] < 0.05
            lines += [
                f"Which layers lose filters first ({criterion}): the paper's finding is "
                f"**{analysis['verdict']}** against no order "
                f"(last iteration: cumulative ρ {_fmt(last.get('rho_cumulative'), '+.2f')}, "
                f"p {_fmt(last.get('p_cumulative'), '.3f')}), and **{'' if beyond else 'not '}beyond the "
                f"schedule's own order** (null '{applicable_null(criterion)}': ρ {null['mean']:+.2f}, "
                f"p {_fmt(null['p_exceeds'], '.3f')}); first thinned {analysis['first_thinned']}; "
                f"widest {analysis['widest']}.",
                "",
                "| iteration | removed so far | ρ this iteration (p) | ρ cumulative (p) |",
                "|---:|---:|---|---|",
            ]
            lines += [
                f"| {i['iteration']} | {100 * i['removed_share']:.1f} % | {_fmt(i['rho_step'], '+.2f')} "
                f"({_fmt(i['p_step'], '.3f')}) | {_fmt(i['rho_cumulative'], '+.2f')} "
                f"({_fmt(i['p_cumulative'], '.3f')}) |"
                for i in analysis["iterations"]
            ]
            lines += [
                "",
                "| null schedule (uniform scores) | ρ mean [5–95 %] | p (null ρ ≥ run's) "
                "| ρ(width, run's share − null's) (p) |",
                "|---|---|---:|---|",
            ]
            lines += [
                f"| {name} | {null['mean']:+.2f} [{null['p05']:+.2f}, {null['p95']:+.2f}] | "
                f"{_fmt(null['p_exceeds'], '.3f')} | {_fmt(null['rho_excess'], '+.2f')} "
                f"({_fmt(null['p_excess'], '.3f')}) |"
                for name, null in analysis["nulls"].items()
            ]
            lines.append("")
        if (out_dir / f"filters_per_layer-{family}.png").exists():
            lines += [f"![filters per layer, {family}](comparative/filters_per_layer-{family}.png)", ""]
    if analyses:
        lines += ["## Spearman ρ by iteration", "", "![spearman](comparative/spearman.png)", ""]
    write_with_reading(args.out / "comparative.md", lines)
    (out_dir / "summary.json").write_text(
        json.dumps({"rows": by_family, "layer_order": analyses, "teacher": teacher}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
