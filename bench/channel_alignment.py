"""Does the channel count itself, not only the FLOPs, set ONNX Runtime's CPU latency?

Pruned variants with fewer FLOPs than the dense model were measured slower at 10 % of filters removed
(reports/pruning.md). This times the same architecture at widths that differ only in alignment: the dense
widths, the dense widths minus one filter per layer (odd counts), the Taylor 30 % widths as pruned, and those
widths rounded up to multiples of 8 and of 16. Weights are random (latency does not depend on them).

Run: .venv/bin/python bench/channel_alignment.py [--taylor-30 runs/prune-taylor/level-30.pt]
Writes reports/channel_alignment.{md,json}. Needs a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch
from pruning_report import latency_ms  # bench/ is on sys.path when this script runs

from pruning.checkpoint import load_checkpoint
from pruning.export import export_onnx
from pruning.models import SqueezeFaceNet, count_flops, count_params, create_model
from pruning.surgery import filter_counts, remove_filters

ROOT = Path(__file__).resolve().parents[1]


def with_widths(widths: dict[str, int]) -> SqueezeFaceNet:
    """The dense architecture thinned to ``widths`` (filters dropped from the end of each layer)."""
    model = create_model()
    plan = {name: list(range(widths[name], count)) for name, count in filter_counts(model).items()}
    return remove_filters(model, plan)


def round_up(widths: dict[str, int], multiple: int, limit: dict[str, int]) -> dict[str, int]:
    return {k: min(limit[k], multiple * math.ceil(v / multiple)) for k, v in widths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taylor-30", type=Path, help="a pruned checkpoint whose widths to time")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    args = parser.parse_args()
    torch.manual_seed(0)
    dense = filter_counts(create_model())
    variants = {
        "dense": dense,
        "dense − 1 filter per layer": {k: v - 1 for k, v in dense.items()},
    }
    if args.taylor_30:
        pruned = filter_counts(load_checkpoint(args.taylor_30)[0])
        variants["taylor-30 as pruned"] = pruned
        variants["taylor-30 rounded up to ×8"] = round_up(pruned, 8, dense)
        variants["taylor-30 rounded up to ×16"] = round_up(pruned, 16, dense)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, widths in variants.items():
            model = with_widths(widths)
            path = Path(tmp) / "m.onnx"
            export_onnx(model, path)
            rows.append(
                {
                    "variant": label,
                    "params": count_params(model),
                    "flops": count_flops(model),
                    "odd_layers": sum(w % 8 != 0 for w in widths.values()),
                    "latency_b1_ms": latency_ms(path, 1, 300),
                    "latency_b32_ms": latency_ms(path, 32, 30),
                }
            )
            print(rows[-1])
    lines = [
        "# Channel alignment and ONNX Runtime latency",
        "",
        "`.venv/bin/python bench/channel_alignment.py"
        + (f" --taylor-30 {args.taylor_30}`" if args.taylor_30 else "`"),
        "",
        "Same architecture, random weights, ONNX Runtime CPU, 1 thread, "
        "median of 300 (batch 1) / 30 (batch 32) runs.",
        "",
        "| widths | params | FLOPs (M) | layers not a multiple of 8 | ms b1 | ms b32 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['params']:,} | {r['flops'] / 1e6:.1f} | {r['odd_layers']}/{len(dense)} | "
            f"{r['latency_b1_ms']:.2f} | {r['latency_b32_ms']:.1f} |"
        )
    (args.out / "channel_alignment.md").write_text("\n".join(lines) + "\n")
    (args.out / "channel_alignment.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
