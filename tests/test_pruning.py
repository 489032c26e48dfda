"""Filter surgery and importance criteria on the SqueezeFaceNet architecture."""

from __future__ import annotations

import copy
import gc
import weakref
from pathlib import Path

import pytest
import torch

from pruning.checkpoint import load_checkpoint, save_checkpoint
from pruning.importance import (
    MagnitudeImportance,
    RandomImportance,
    TaylorImportance,
    create_importance,
    lowest_filters,
)
from pruning.models import SqueezeFaceNetConfig, count_params, create_model, with_pooling
from pruning.surgery import filter_counts, prunable_layers, remove_filters
from pruning.widen import widen_checkpoint, widen_squeezes
from tests.pruning_support import cosine_loss, random_batches

SMALL = SqueezeFaceNetConfig(
    stem=24, fires=[(8, 16, 16), (8, 16, 16), (12, 24, 24), (12, 24, 24)] * 2, head=48
)


def _randomised(config: SqueezeFaceNetConfig = SMALL, seed: int = 0):
    """A model with non-trivial batch-norm statistics, so a zeroed filter really changes the output."""
    torch.manual_seed(seed)
    model = create_model(copy.deepcopy(config)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.5)
    return model


def _zeroed(model, plan):
    """Reference: the same network with the planned filters' outputs forced to zero (BN scale/shift 0)."""
    reference = copy.deepcopy(model)
    layers = prunable_layers(reference)
    for name, indices in plan.items():
        bn = layers[name][1]
        bn.weight.data[indices] = 0
        bn.bias.data[indices] = 0
    return reference


PLANS = {
    "stem": {"stem": [0, 3, 7]},
    "squeeze": {"fire2.squeeze": [1, 2]},
    "expand1": {"fire4.expand1": [0, 5, 6]},
    "expand3": {"fire5.expand3": [2, 23]},
    "head": {"head": [0, 10, 47]},
    "everywhere": {
        "stem": [1],
        "fire3.squeeze": [0],
        "fire3.expand1": [4],
        "fire3.expand3": [9, 10],
        "fire9.expand3": [3],
        "head": [5],
    },
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
def test_pruned_output_equals_zeroed_filters(plan) -> None:
    model = _randomised()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        expected = _zeroed(model, plan)(x)
    before = count_params(model)
    remove_filters(model, plan)
    with torch.no_grad():
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-4)
    assert count_params(model) < before
    counts = filter_counts(model)
    original = filter_counts(_randomised())
    for name, indices in plan.items():
        assert counts[name] == original[name] - len(indices)


def test_gdc_starts_as_average_pooling_and_prunes_with_the_head() -> None:
    model = _randomised()
    x = torch.randn(3, 3, 112, 112)
    gdc = with_pooling(model, "gdc").eval()
    with torch.no_grad():
        assert torch.allclose(gdc(x), model(x), atol=1e-5)  # lossless conversion of a trained GAP network
        assert count_params(gdc) == count_params(model) + SMALL.head * 7 * 7
        gdc.global_pool.weight.uniform_(0, 0.05)  # a learnt spatial map, so pruning has something to keep
    plan = PLANS["everywhere"]
    with torch.no_grad():
        expected = _zeroed(gdc, plan)(x)
    remove_filters(gdc, plan)
    with torch.no_grad():
        assert torch.allclose(gdc(x), expected, atol=1e-4)
    assert gdc.global_pool.weight.shape[0] == gdc.config.head == SMALL.head - 1
    with pytest.raises(ValueError, match="cannot be turned back"):
        with_pooling(gdc, "gap")


def test_pruned_model_reloads_from_its_checkpoint(tmp_path: Path) -> None:
    model = _randomised()
    remove_filters(model, PLANS["everywhere"])
    save_checkpoint(tmp_path / "pruned.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "pruned.pt")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.config.fires[1][2] == SMALL.fires[1][2] - 2
    assert loaded.embedding.out_features == 128  # the embedding is never pruned


def test_taylor_scoring_releases_each_batchs_activations() -> None:
    """The gradient hooks once closed over the activations they scored, a reference cycle through autograd
    that Python's collector cannot see: the CPU prune of ResNet-50 was OOM-killed by its third iteration."""
    model = _randomised()
    alive = []
    model.head.register_forward_hook(lambda _m, _i, output: alive.append(weakref.ref(output)))
    importance = TaylorImportance()
    batches = [torch.randn(2, 3, 112, 112) for _ in range(3)]
    importance.accumulate(model, lambda m, x: m(x).pow(2).sum(), batches)
    gc.collect()
    assert len(alive) == 3 and all(ref() is None for ref in alive)
    assert set(importance.scores(model)) == set(prunable_layers(model))


def test_widened_squeezes_compute_the_same_function_and_can_diverge(tmp_path: Path) -> None:
    model = _randomised()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        expected = model(x)
    save_checkpoint(tmp_path / "narrow.pt", model)
    widen_checkpoint(tmp_path / "narrow.pt", tmp_path / "wide.pt", 1.5, seed=3)
    wide, checkpoint = load_checkpoint(tmp_path / "wide.pt")
    wide.eval()
    assert [f[0] for f in wide.config.fires] == [round(f[0] * 1.5) for f in SMALL.fires]
    assert checkpoint.meta.config["widened"]["squeeze_factor"] == 1.5
    with torch.no_grad():
        assert torch.allclose(wide(x), expected, atol=1e-5)
    # A copy receives another gradient than its source (uneven shares), so training can separate them.
    fire = wide.fires[0]
    squeeze = fire.squeeze[0].weight
    copy_row = SMALL.fires[0][0]  # the first copy; its source is the one with identical weights
    source_row = next(i for i in range(copy_row) if torch.equal(squeeze[i], squeeze[copy_row]))
    wide.train()
    wide(x).pow(2).sum().backward()
    assert not torch.allclose(squeeze.grad[source_row], squeeze.grad[copy_row])
    # The wider network prunes like any other.
    remove_filters(wide, {"fire2.squeeze": [0, copy_row]})
    assert wide.config.fires[0][0] == round(SMALL.fires[0][0] * 1.5) - 2
    with pytest.raises(ValueError, match="only squeezefacenet"):
        widen_squeezes(create_model(family="mobilenetv2"), 2)


def test_refuses_to_empty_a_layer() -> None:
    model = _randomised()
    with pytest.raises(ValueError, match="every filter"):
        remove_filters(model, {"fire2.squeeze": list(range(8))})


@pytest.mark.parametrize("form", ["activation", "weight", "weight_sum_sq"])
def test_taylor_scores_are_per_filter_and_normalised(form) -> None:
    model = _randomised()
    importance = TaylorImportance(form)
    importance.accumulate(model, cosine_loss, random_batches())
    scores = importance.scores(model)
    assert set(scores) == set(prunable_layers(model))
    for name, score in scores.items():
        assert score.shape == (filter_counts(model)[name],)
        assert (score >= 0).all()
        assert torch.isclose(score.norm(), torch.tensor(1.0), atol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_taylor_gives_a_dead_filter_zero() -> None:
    model = _randomised()
    bn = model.fires[2].expand1[1]
    bn.weight.data[3] = 0
    bn.bias.data[3] = -1  # always negative before ReLU: the map is zero everywhere
    for form in ("activation", "weight"):
        importance = TaylorImportance(form)
        importance.accumulate(model, cosine_loss, random_batches())
        score = importance.scores(model)["fire4.expand1"]
        assert score[3] == pytest.approx(0.0, abs=1e-8)
        assert score.max() > 0


def test_taylor_ranks_by_first_order_loss_change() -> None:
    """Removing the filters Taylor ranks lowest hurts the loss less than removing the highest ranked."""
    model = _randomised()
    batches = random_batches(3)
    importance = TaylorImportance("weight")
    importance.accumulate(model, cosine_loss, batches)
    score = importance.scores(model)["head"]
    order = torch.argsort(score)
    model.eval()

    def loss_without(indices) -> float:
        pruned = remove_filters(copy.deepcopy(model), {"head": indices.tolist()})
        with torch.no_grad():
            return sum(cosine_loss(pruned, b).item() for b in batches)

    with torch.no_grad():
        base = sum(cosine_loss(model, b).item() for b in batches)
    assert abs(loss_without(order[:8]) - base) < abs(loss_without(order[-8:]) - base)


def test_l1_and_random_baselines() -> None:
    model = _randomised()
    model.stem[0].weight.data[5] = 0
    l1 = MagnitudeImportance().scores(model)
    assert l1["stem"].argmin() == 5
    first = RandomImportance(seed=3).scores(model)
    again = RandomImportance(seed=3).scores(model)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert create_importance("taylor").name == "taylor_activation"
    with pytest.raises(ValueError):
        create_importance("nope")


def test_lowest_filters_is_global_and_keeps_a_minimum() -> None:
    scores = {"a": torch.tensor([0.1, 0.9, 0.2]), "b": torch.tensor([0.05, 0.06, 0.5, 0.7])}
    plan = lowest_filters(scores, 3, min_keep={"a": 1, "b": 1})
    assert plan == {"a": [0], "b": [0, 1]}
    capped = lowest_filters(scores, 5, min_keep={"a": 2, "b": 3})
    assert capped == {"a": [0], "b": [0]}


def test_lowest_filters_round_to_keeps_layers_aligned() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.rand(size, generator=generator) for name, size in (("a", 32), ("b", 48), ("c", 16))}
    min_keep = {"a": 4, "b": 4, "c": 4}
    for count in (1, 5, 20, 40):
        plan = lowest_filters(scores, count, min_keep=min_keep, round_to=8)
        removed = sum(len(v) for v in plan.values())
        assert count <= removed < count + 8
        for name, indices in plan.items():
            assert (len(scores[name]) - len(indices)) % 8 == 0
            if indices:  # a layer gives up its lowest filters
                assert max(scores[name][indices]) <= min(
                    s for i, s in enumerate(scores[name]) if i not in indices
                )
    assert lowest_filters(scores, 5, min_keep=min_keep) == lowest_filters(
        scores, 5, min_keep=min_keep, round_to=1
    )
