"""MobileNetV2 and ResNet-50 embedders: architecture, saved architecture, filter surgery on every block type.

Surgery is checked as in tests/test_pruning.py: a pruned network's output equals the unpruned one with those
filters' outputs zeroed (batch-norm scale and shift 0 in every member of the unit), on narrow configs that
keep every block type: a depthwise conv fed by the stem or by an expansion, residual streams (identity and
projection shortcuts), non-residual projections and the head.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision

from pruning.checkpoint import load_checkpoint, save_checkpoint
from pruning.importance import MagnitudeImportance, TaylorImportance, lowest_filters
from pruning.models import (
    FAMILIES,
    MobileNetV2FaceConfig,
    ResNet50FaceConfig,
    count_flops,
    count_params,
    create_model,
    saved_architecture,
)
from pruning.surgery import filter_counts, prunable_units, remove_filters
from tests.pruning_support import cosine_loss, random_batches

MOBILENET = MobileNetV2FaceConfig(
    stem=8,
    blocks=[
        (0, 6, 1, False),  # no expansion: the depthwise conv is fed by the stem
        (12, 8, 2, False),
        (16, 8, 1, True),  # identity shortcuts: one stream of three projections
        (16, 8, 1, True),
        (24, 12, 2, False),
        (24, 12, 1, True),
    ],
    head=32,
)
RESNET = ResNet50FaceConfig(
    stem=8,
    blocks=[
        (4, 4, 16, 1, True),  # projection shortcut at stride 1 (64 → 256 in the real network)
        (4, 6, 16, 1, False),
        (6, 6, 24, 2, True),
        (6, 8, 24, 1, False),
        (8, 8, 24, 1, False),
    ],
)
CONFIGS = {"mobilenetv2": MOBILENET, "resnet50": RESNET}

PLANS = {
    "mobilenetv2": {
        "stem+depthwise": {"stem": [0, 5]},
        "lone projection": {"stage1.project": [2]},
        "expansion+depthwise": {"block2.expand": [1, 7, 15]},
        "residual stream": {"stage2.project": [0, 6]},
        "stream of two": {"stage3.project": [11]},
        "head": {"head": [3, 30]},
        "everywhere": {
            "stem": [7],
            "block1.expand": [0],
            "stage2.project": [3],
            "block4.expand": [5, 6],
            "stage3.project": [0],
            "head": [0],
        },
    },
    "resnet50": {
        "stem": {"stem": [1, 4]},
        "conv1": {"layer1.1.conv1": [0]},
        "conv2 (strided)": {"layer2.0.conv2": [2, 5]},
        "stream with projection": {"layer1.out": [0, 9, 15]},
        "last stream (embedding input)": {"layer2.out": [3, 23]},
        "everywhere": {
            "stem": [0],
            "layer1.0.conv2": [3],
            "layer1.out": [4],
            "layer2.1.conv1": [1],
            "layer2.2.conv2": [7],
            "layer2.out": [10],
        },
    },
}
CASES = [(family, label) for family, plans in PLANS.items() for label in plans]


def _randomised(family: str, seed: int = 0):
    """A narrow model with non-trivial batch-norm statistics, so a zeroed filter really changes the output."""
    torch.manual_seed(seed)
    model = create_model(copy.deepcopy(CONFIGS[family])).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.5)
    model.embedding_bn.running_var.fill_(0.01)  # outputs ×10: a zeroed filter shows well above tolerance
    return model


def _zeroed(model, plan):
    """Reference: the same network with the planned channels zeroed in every member of each unit."""
    reference = copy.deepcopy(model)
    units = prunable_units(reference)
    for name, indices in plan.items():
        for block in units[name]:
            block[1].weight.data[indices] = 0
            block[1].bias.data[indices] = 0
    return reference


@pytest.mark.parametrize(("family", "label"), CASES, ids=[f"{f}:{label}" for f, label in CASES])
def test_pruned_output_equals_zeroed_filters(family: str, label: str) -> None:
    plan = PLANS[family][label]
    model = _randomised(family)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        expected = _zeroed(model, plan)(x)
        assert (model(x) - expected).abs().max() > 5e-3  # the plan matters (50× the tolerance below)
    before, original = count_params(model), filter_counts(model)
    remove_filters(model, plan)
    with torch.no_grad():
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-4)
    assert count_params(model) < before
    counts = filter_counts(model)
    for name, width in original.items():
        assert counts[name] == width - len(plan.get(name, []))
    for module in model.modules():  # depthwise convs stayed depthwise
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            assert module.groups == module.in_channels == module.out_channels


@pytest.mark.parametrize("family", list(CONFIGS))
def test_pruned_model_reloads_from_its_checkpoint(family: str, tmp_path: Path) -> None:
    model = _randomised(family)
    remove_filters(model, PLANS[family]["everywhere"])
    save_checkpoint(tmp_path / "pruned.pt", model)
    loaded, payload = load_checkpoint(tmp_path / "pruned.pt")
    assert payload.arch["family"] == family and type(loaded) is type(model)
    assert loaded.config == model.config
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.embedding.out_features == 128  # the embedding is never pruned


def test_squeezefacenet_checkpoint_without_family_still_loads(tmp_path: Path) -> None:
    model = create_model().eval()
    arch = saved_architecture(model)
    assert arch.pop("family") == "squeezefacenet"
    torch.save({"arch": arch, "state_dict": model.state_dict()}, tmp_path / "old.pt")  # the old format
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="unknown model family"):
        create_model({"family": "vgg16"})
    with pytest.raises(ValueError, match="is a mobilenetv2"):
        create_model({"family": "mobilenetv2"}, family="resnet50")


def test_full_size_networks_match_torchvision_trunks() -> None:
    """Our blocks rebuild torchvision's ImageNet trunks exactly; only the head differs."""
    mobilenet, resnet = create_model(family="mobilenetv2"), create_model(family="resnet50")
    reference_mn = torchvision.models.mobilenet_v2()
    reference_rn = torchvision.models.resnet50()
    head_mn = count_params(mobilenet.embedding) + count_params(mobilenet.embedding_bn)
    head_rn = count_params(resnet.embedding) + count_params(resnet.embedding_bn)
    assert count_params(mobilenet) - head_mn == count_params(reference_mn) - count_params(
        reference_mn.classifier
    )
    assert count_params(resnet) - head_rn == count_params(reference_rn) - count_params(reference_rn.fc)
    assert 2.3e6 < count_params(mobilenet) < 2.5e6  # the paper's 3.5M counts the 1000-way classifier
    assert 23.5e6 < count_params(resnet) < 24.0e6  # the paper's 23.5M trunk + a 2048→128 embedding
    assert 2.0e9 < count_flops(resnet) < 2.3e9  # ~1.07 GMAC a 112 px face
    assert 1.4e8 < count_flops(mobilenet) < 1.8e8
    for model in (mobilenet, resnet):
        again = create_model(saved_architecture(model))
        assert type(again) is type(model) and again.config == model.config


def test_mobilenet_units_couple_depthwise_and_streams() -> None:
    units = prunable_units(create_model(family="mobilenetv2"))
    assert [len(units[k]) for k in ("stem", "block1.expand", "stage2.project", "stage4.project")] == [
        2,
        2,
        2,
        4,
    ]
    assert filter_counts(create_model(family="mobilenetv2"))["head"] == 1280
    resnet = prunable_units(create_model(family="resnet50"))
    assert [len(resnet[f"layer{i}.out"]) for i in (1, 2, 3, 4)] == [4, 5, 7, 4]  # shortcut + conv3s
    assert len(resnet) == 1 + 2 * 16 + 4


@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize("form", ["activation", "weight"])
def test_taylor_scores_every_unit_and_gives_a_dead_stream_channel_zero(family: str, form: str) -> None:
    model = _randomised(family)
    stream = "stage2.project" if family == "mobilenetv2" else "layer1.out"
    for block in prunable_units(model)[stream]:  # channel 2 dead in every member: the stream carries 0
        block[1].weight.data[2] = 0
        block[1].bias.data[2] = 0
    importance = TaylorImportance(form)
    importance.accumulate(model, cosine_loss, random_batches(size=4))
    scores = importance.scores(model)
    counts = filter_counts(model)
    assert set(scores) == set(counts)
    for name, score in scores.items():
        assert score.shape == (counts[name],) and (score >= 0).all()
    assert scores[stream][2] == pytest.approx(0.0, abs=1e-8) and scores[stream].max() > 0
    assert all(p.grad is None for p in model.parameters())
    plan = lowest_filters(scores, 6, min_keep={k: 2 for k in counts}, round_to=2)
    pruned = remove_filters(model, plan)
    assert all((w % 2 == 0) or w == counts[k] for k, w in filter_counts(pruned).items())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_l1_scores_cover_every_member(family: str) -> None:
    model = create_model(family=family) if family == "squeezefacenet" else _randomised(family)
    scores = MagnitudeImportance().scores(model)
    assert {k: len(v) for k, v in scores.items()} == filter_counts(model)
