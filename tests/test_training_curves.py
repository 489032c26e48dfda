"""bench/training_curves.py on run folders shaped like faceverify train's (a resumed run repeats steps)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from training_curves import read_run  # noqa: E402


def _run(folder: Path, records: list[dict]) -> Path:
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"config": {"batch_size": 64}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_a_resumed_runs_later_records_win_and_the_figure_is_written(tmp_path: Path) -> None:
    records = [
        {"step": 10, "cos": 0.5},
        {"step": 20, "cos": 0.6},
        {"step": 20, "val": {"tar_at_fmr_1e-3": 0.40}},
        {"step": 20, "cos": 0.7},  # resumed from step 10's checkpoint: step 20 again
        {"step": 20, "val": {"tar_at_fmr_1e-3": 0.45}},
        {"step": 30, "cos": 0.8},
    ]
    run = read_run(_run(tmp_path / "a", records))
    assert run["steps"] == 30 and run["samples"] == 30 * 64
    assert run["cosine"] == {"10": 0.5, "20": 0.7, "30": 0.8}
    assert run["val"] == {"20": 0.45} and run["best_val_step"] == 20
    assert abs(run["final_training_cosine"] - (0.5 + 0.7 + 0.8) / 3) < 1e-12
    _run(tmp_path / "b", records[:2])
    out = tmp_path / "out" / "pilot"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/training_curves.py"),
            f"--run=a={tmp_path / 'a'}",
            f"--run=b={tmp_path / 'b'}",
            f"--out={out}",
        ],
        check=True,
    )
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert set(json.loads(out.with_suffix(".json").read_text())) == {"a", "b"}
