"""Training runs side by side: training cosine to the teacher and validation TAR@FMR1e-3 against samples seen.

Reads each run folder's ``metrics.jsonl`` (``faceverify train``; a resumed run's repeated steps count once,
the later record wins) and draws one figure and one table, for pilots compared at an equal budget.

Run:
    python bench/training_curves.py --run wide=/root/runs/wide --run control=/root/runs/wide-ctl \\
        --out reports/training/wide-pilot
Writes OUT.png and OUT.json (per run: steps, samples, smoothed final training cosine, validation points).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

VAL_KEY = "tar_at_fmr_1e-3"


def read_run(run_dir: Path) -> dict[str, object]:
    """Training cosine per step and validation TAR per step of one run (later records win on resume)."""
    cosine: dict[int, float] = {}
    val: dict[int, float] = {}
    batch = json.loads((run_dir / "run.json").read_text())["config"]["batch_size"]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "cos" in record:
            cosine[record["step"]] = record["cos"]
        if "val" in record:
            val[record["step"]] = record["val"][VAL_KEY]
    steps = sorted(cosine)
    tail = [cosine[s] for s in steps[-20:]]
    return {
        "batch_size": batch,
        "steps": steps[-1] if steps else 0,
        "samples": (steps[-1] if steps else 0) * batch,
        "final_training_cosine": statistics.mean(tail) if tail else None,
        "cosine": {str(s): cosine[s] for s in steps},
        "val": {str(s): val[s] for s in sorted(val)},
        "best_val": max(val.values()) if val else None,
        "best_val_step": max(val, key=val.__getitem__) if val else None,
    }


def smooth(values: list[float], window: int) -> list[float]:
    return [statistics.mean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot(runs: dict[str, dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in runs.items():
        steps = [int(s) for s in run["cosine"]]
        samples = [s * run["batch_size"] / 1e3 for s in steps]
        left.plot(samples, smooth(list(run["cosine"].values()), 10), label=name)
        val_steps = [int(s) for s in run["val"]]
        val_samples = [s * run["batch_size"] / 1e3 for s in val_steps]
        right.plot(val_samples, list(run["val"].values()), "o-", label=name)
    left.set(xlabel="samples seen (k)", ylabel="training cosine to the teacher (10-point mean)")
    right.set(xlabel="samples seen (k)", ylabel="validation TAR @ FMR 1e-3 (one pass)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="path stem: OUT.png and OUT.json")
    args = parser.parse_args()
    runs = {}
    for spec in args.run:
        name, _, path = spec.partition("=")
        runs[name] = read_run(Path(path))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1) + "\n")
    for name, run in runs.items():
        print(
            f"{name}: {run['steps']} steps ({run['samples']:,} samples), training cosine "
            f"{run['final_training_cosine']:.4f}, best val TAR@FMR1e-3 {run['best_val']} "
            f"at step {run['best_val_step']}"
        )


if __name__ == "__main__":
    main()
