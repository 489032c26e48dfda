"""The comparative study end to end on a few real crops: train a MobileNetV2 from scratch, prune a network
of each family by the schedule, then bench/comparative_report.py measures every checkpoint's ONNX and
writes the report with its figures and layer-order statistics.

Narrow widths and a handful of steps: this checks the plumbing, not accuracy (the real runs are in
reports/comparative.md once done).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pruning.checkpoint import load_checkpoint, save_checkpoint
from pruning.models import create_model
from pruning.prune import PruneConfig, prune
from pruning.surgery import filter_counts
from pruning.train import TrainConfig, train
from tests.test_offline_pipeline import (  # noqa: F401  (fixtures)
    BBT,
    bbt_pairs,
    crops_root,
    detector_only_store,
    photo_folder,
)
from tests.test_pruning_families import MOBILENET, RESNET

ROOT = Path(__file__).resolve().parents[1]
SQUEEZE = {"stem": 32, "fires": [(8, 16, 16)] * 8, "head": 64, "pool_after": (1, 3)}


def _prune(dense: Path, run_dir: Path, crops: Path, criterion: str, round_to: int = 1) -> dict:
    config = PruneConfig(
        run_dir=run_dir,
        checkpoint=dense,
        crops_root=crops,
        criterion=criterion,
        pruning_ratio=0.2,
        iterative_steps=2,
        levels=(0.2,),
        importance_batches=1,
        finetune_steps=1,
        final_finetune_steps=1,
        batch_size=8,
        val_fraction=0.5,
        round_to=round_to,
        bf16=True,  # the CPU schedule's fine-tuning as it is run: bf16 autocast through every block type
    )
    return prune(config, progress=False)


@pytest.fixture(scope="module")
def study(crops_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("study")
    mobilenet = TrainConfig(
        run_dir=root / "mobilenetv2",
        crops_root=crops_root,
        batch_size=8,
        max_steps=2,
        val_every=2,
        warmup_steps=1,
        arch={"family": "mobilenetv2", **MOBILENET.to_dict()},
        val_fraction=0.5,
        compile=False,
        bf16=True,  # the CPU autocast path (ResNet-50's fastest setting) trains too
    )
    train(mobilenet, progress=False)
    dense = {"mobilenetv2": mobilenet.run_dir / "best.pt"}
    for family, config in (("squeezefacenet", SQUEEZE), ("resnet50", RESNET.to_dict())):
        dense[family] = root / f"{family}.pt"
        save_checkpoint(dense[family], create_model({"family": family, **config}))  # untrained: plumbing only
    runs = {}
    for family, criterion, round_to in (
        ("squeezefacenet", "taylor", 1),
        ("mobilenetv2", "taylor", 2),
        ("mobilenetv2", "l1", 1),
        ("resnet50", "taylor", 1),
    ):
        runs[f"{family}:{criterion}"] = root / f"{family}-{criterion}"
        _prune(dense[family], runs[f"{family}:{criterion}"], crops_root, criterion, round_to)
    return {"root": root, **{f"dense:{k}": v for k, v in dense.items()}, **runs}


def test_a_fresh_mobilenet_trains_and_each_family_prunes_with_recorded_widths(study: dict[str, Path]) -> None:
    model, payload = load_checkpoint(study["dense:mobilenetv2"])
    assert payload.arch["family"] == "mobilenetv2" and model.config == MOBILENET
    assert payload.meta.config["bf16"] is True and all(p.dtype == torch.float32 for p in model.parameters())
    assert payload.val is not None
    assert all(math.isfinite(v) for v in payload.val.values() if isinstance(v, float))
    for key in ("squeezefacenet:taylor", "mobilenetv2:taylor", "mobilenetv2:l1", "resnet50:taylor"):
        history = json.loads((study[key] / "history.json").read_text())
        level, level_payload = load_checkpoint(study[key] / "level-20.pt")
        assert level.family == key.split(":")[0]
        assert filter_counts(level) == level_payload.record["filters"] == history["history"][-1]["filters"]
        assert set(history["original_filters"]) == set(history["history"][0]["filters"])
        assert history["history"][-1]["removed_share"] >= 0.2
    rounded = load_checkpoint(study["mobilenetv2:taylor"] / "level-20.pt")[0]
    dense = filter_counts(load_checkpoint(study["dense:mobilenetv2"])[0])
    assert all(w % 2 == 0 for k, w in filter_counts(rounded).items() if w != dense[k])  # --round-to 2


def test_comparative_report_end_to_end(study: dict[str, Path], crops_root: Path, tmp_path: Path) -> None:  # noqa: F811
    store = detector_only_store(tmp_path)
    out = tmp_path / "reports"
    args = [
        sys.executable,
        str(ROOT / "bench" / "comparative_report.py"),
        *[f"--dense={f}={study[f'dense:{f}']}" for f in ("squeezefacenet", "mobilenetv2", "resnet50")],
        *[f"--run={k}={study[k]}" for k in study if ":" in k and not k.startswith("dense:")],
        f"--pairs={bbt_pairs(tmp_path)}",
        f"--images-root={BBT}",
        f"--crops-root={crops_root}",
        "--val-fraction=0.5",
        f"--eval-cache={tmp_path / 'eval-cache'}",
        f"--store={store.root}",
        "--latency-iters",
        "2",
        "1",
        f"--out={out}",
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "comparative.md").read_text()
    for heading in ("## Dense networks", "## squeezefacenet", "## mobilenetv2", "## resnet50"):
        assert heading in report
    for variant in (
        "mobilenetv2-taylor-20",
        "mobilenetv2-l1-20",
        "resnet50-taylor-20",
        "squeezefacenet-taylor-20",
    ):
        assert f"| {variant} |" in report
    # the committed evaluation of the teacher (SFace), beside the students
    assert "teacher (sface@1)" in report
    for figure in (
        "accuracy_vs_params",
        "spearman",
        *(f"filters_per_layer-{f}" for f in ("mobilenetv2", "resnet50")),
    ):
        assert (out / "comparative" / f"{figure}.png").stat().st_size > 1000
    summary = json.loads((out / "comparative" / "summary.json").read_text())
    assert set(summary["rows"]) == {"squeezefacenet", "mobilenetv2", "resnet50"}
    for row in summary["rows"]["resnet50"]:
        assert row["family"] == "resnet50" and row["onnx_bytes"] > 0 and row["latency_b32_ms"] > 0
        assert 0.0 <= row["lfw_accuracy"] <= 1.0 and "lfw_tar_at_far_1e-3" in row
    analysis = summary["layer_order"]["mobilenetv2"]["taylor"]
    assert [i["iteration"] for i in analysis["iterations"]] == [1, 2]
    assert analysis["verdict"] in {"confirmed", "refuted", "not shown"}
    assert set(analysis["nulls"]) == {"rounding", "rounding + ℓ2"}
    assert "beyond the schedule's own order" in report


def test_null_schedules_show_which_order_the_allocation_alone_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uniform-noise scores through prune's allocation: without rounding or normalisation every unit loses
    about the same share (no width order); whole multiples of 16 or ℓ2-normalised scores alone thin the
    widest units first — the order the layer-order finding must beat to be the network's."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from comparative_report import null_schedule

    widths = {f"unit{i}": w for i, w in enumerate((16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512))}
    config = {"pruning_ratio": 0.4, "iterative_steps": 8, "min_keep_fraction": 0.1}

    def mean_rho(round_to: int, normalise: bool) -> float:
        null = null_schedule(widths, config | {"round_to": round_to}, 8, normalise=normalise, sims=40)
        return sum(null.rhos) / len(null.rhos)

    assert abs(mean_rho(1, normalise=False)) < 0.3
    assert mean_rho(16, normalise=False) > 0.7
    assert mean_rho(1, normalise=True) > 0.7
