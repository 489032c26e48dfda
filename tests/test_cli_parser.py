"""The ``faceverify`` parser: defaults are the library's config types', and serving never needs torch."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from faceverify.cli import build_parser
from faceverify.cli.common import default_of

ROOT = Path(__file__).parents[1]
RUN, CROPS, DENSE = Path("run"), Path("crops"), Path("dense.pt")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def subparser(name: str) -> argparse.ArgumentParser:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]  # type: ignore[no-any-return]


# ---- defaults --------------------------------------------------------------------------------------
def test_train_flags_left_unset_give_train_configs_defaults() -> None:
    from faceverify.cli.train import train_config
    from pruning.train import TrainConfig

    config = train_config(parse("train", "--run-dir", str(RUN)), crops_root=CROPS, init=None)
    assert config == TrainConfig(run_dir=RUN, crops_root=CROPS)  # every field, compile and arch included
    bf16 = train_config(parse("train", "--run-dir", str(RUN), "--bf16"), crops_root=CROPS, init=None)
    assert bf16.bf16 and not config.bf16


def test_prune_flags_left_unset_give_prune_configs_defaults() -> None:
    from faceverify.cli.train import prune_config
    from pruning.prune import PruneConfig

    args = parse("prune", str(DENSE), "--run-dir", str(RUN))
    assert args.levels == list(PruneConfig.levels)  # a list, as argparse gives for --levels
    config = prune_config(args, checkpoint=DENSE, crops_root=CROPS)
    assert config == PruneConfig(run_dir=RUN, checkpoint=DENSE, crops_root=CROPS)
    bf16 = prune_config(
        parse("prune", str(DENSE), "--run-dir", str(RUN), "--bf16"), checkpoint=DENSE, crops_root=CROPS
    )
    assert bf16.bf16 and not config.bf16
    gentle = prune_config(
        parse("prune", str(DENSE), "--run-dir", str(RUN), "--lr", "1e-4"), checkpoint=DENSE, crops_root=CROPS
    )
    assert gentle.lr == 1e-4 and config.lr == PruneConfig.lr


def test_quantize_flags_left_unset_give_quant_configs_defaults() -> None:
    from faceverify.cli.publish import _short_float, quant_config
    from pruning.quantize import QuantConfig

    assert quant_config(parse("quantize", "default")) == QuantConfig()
    given = quant_config(parse("quantize", "default", "--per-tensor", "--fmr", "2e-2", "--method", "entropy"))
    assert given == QuantConfig(per_channel=False, fmrs=(2e-2,), method="entropy")
    # the help states QuantConfig's rates, written as people write them
    assert [_short_float(f) for f in (1e-3, 1e-4, 2.5e-2)] == ["1e-3", "1e-4", "2.5e-2"]
    rates = ", ".join(_short_float(f) for f in QuantConfig.fmrs)
    assert f"(repeatable; default {rates})" in " ".join(subparser("quantize").format_help().split())


def test_prep_flags_left_unset_give_prep_configs_defaults() -> None:
    from faceverify.cli.data import prep_config
    from pruning.data.prep import PrepConfig

    assert prep_config(parse("prep")) == PrepConfig()
    assert prep_config(parse("prep", "--preset", "serving")).spec.name == "serving"


def test_a_changed_config_default_changes_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from pruning.train import TrainConfig

    epochs = next(f for f in dataclasses.fields(TrainConfig) if f.name == "epochs")
    monkeypatch.setattr(epochs, "default", 3)
    assert parse("train", "--run-dir", str(RUN)).epochs == 3


def test_default_of_reads_defaults_and_factories_and_refuses_the_rest() -> None:
    @dataclasses.dataclass
    class Config:
        required: int
        plain: float = 0.5
        listed: list[str] = dataclasses.field(default_factory=lambda: ["a"])

    assert default_of(Config, "plain") == 0.5
    first = default_of(Config, "listed")
    assert first == ["a"] and first is not default_of(Config, "listed")  # a fresh one each time
    with pytest.raises(TypeError, match="no default"):
        default_of(Config, "required")
    with pytest.raises(AttributeError, match="no field 'missing'"):
        default_of(Config, "missing")


# ---- the serving image: no torch, no pruning package --------------------------------------------
SERVING_IMAGE = """
import importlib.abc, sys

BLOCKED = ("torch", "torchvision", "pruning", "onnx")  # none of them is in the serving image


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the serving image)", name=name)
        return None


sys.meta_path.insert(0, Absent())
import faceverify.cli
from faceverify.cli import build_parser, main

parser = build_parser()
parser.format_help()
for argv in (["models", "list"], ["models", "verify", "--json"], ["serve"], ["serve", "--workers", "4"]):
    parser.parse_args(argv)
try:
    parser.parse_args(["serve", "--help"])
except SystemExit as stop:
    assert stop.code == 0, stop.code
assert main(["models", "list", "--json"]) == 0
import service.main, service.server  # what `faceverify serve` imports when it runs
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def test_cli_and_serving_parsers_need_neither_torch_nor_pruning() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVING_IMAGE], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert '"mtcnn@1"' in result.stdout  # models list ran
    assert "usage: faceverify serve" in result.stdout
