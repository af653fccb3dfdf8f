"""Rare attributes: balanced positive weights and attribute-balanced sampling (siam.data.balance)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Subset

from siam.data.balance import (
    MAX_IMAGE_WEIGHT,
    POS_WEIGHT_CAP,
    BalancedSampler,
    balanced_weights,
    dataset_labels,
    expected_rates,
    presence_pos_weight,
)
from siam.data.datamodule import SiamDataModule
from siam.data.samples import Sample
from siam.errors import ConfigError
from siam.training.config import config_from_dict


def _labels(n: int, counts: list[int]) -> torch.Tensor:
    """(n, K) labels: attribute k present (1.0) in images [start_k, start_k + counts[k]), disjoint blocks."""
    y = torch.zeros(n, len(counts))
    start = 0
    for k, c in enumerate(counts):
        y[start : start + c, k] = 1.0
        start += c
    return y


def test_balanced_pos_weight_is_sqrt_neg_over_pos_between_1_and_the_cap() -> None:
    y = torch.zeros(200, 4)
    y[:50, 0] = 1.0  # pos 50, neg 150: sqrt(3)
    y[:150, 1] = 1.0  # frequent: sqrt(1/3) < 1 -> 1 (never down-weighted)
    y[0, 3] = 1.0  # pos 1, neg 199: sqrt(199) = 14.1 -> capped
    y[1, 0] = 0.5  # soft labels count by value: attribute 0 is then pos 49.5, neg 150.5
    w = presence_pos_weight(y, "balanced")
    assert w is not None
    assert float(w[0]) == pytest.approx(math.sqrt(150.5 / 49.5), rel=1e-6)
    assert float(w[1]) == 1.0
    assert float(w[2]) == 1.0  # no positives at all: weight irrelevant, 1
    assert float(w[3]) == POS_WEIGHT_CAP
    assert presence_pos_weight(y, "none") is None
    torch.testing.assert_close(presence_pos_weight(y, 2.5), torch.full((4,), 2.5))


def test_single_rare_attribute_gets_the_hand_computed_weight() -> None:
    """N = 20, attribute in 2 images, rate 0.25: weight w with 2w / (2w + 18) = 0.25, i.e. w = 3."""
    y = _labels(20, [2])
    w = balanced_weights(y, 0.25)
    torch.testing.assert_close(w[:2], torch.full((2,), 3.0))
    torch.testing.assert_close(w[2:], torch.ones(18))
    # An attribute already at or above the rate is left alone.
    torch.testing.assert_close(balanced_weights(_labels(20, [10]), 0.25), torch.ones(20))


def test_sampler_draws_rare_attributes_at_the_intended_rate() -> None:
    """Attributes in 40%, 3%, 1% and 0.5% of 400 images (0.5%: 2 images); target 0.1. Every rare
    attribute's expected rate reaches 0.1, and 20,000 draws show it within 0.01 (3.5 sd)."""
    y = _labels(400, [160, 12, 4, 2])
    y[:6, 1] = 1.0  # some overlap of a rare attribute with the frequent one
    rate = 0.1
    w = balanced_weights(y, rate)
    present = (y >= 0.5).float()
    want = expected_rates(present, w)
    assert bool((want[1:] >= rate - 1e-4).all()), want
    assert float(w.max()) <= MAX_IMAGE_WEIGHT
    sampler = BalancedSampler(w, num_samples=20_000, seed=3)
    drawn = present[torch.tensor(list(sampler))].mean(0)
    assert torch.allclose(drawn, want.float(), atol=0.01), (drawn, want)
    before = present.mean(0)
    assert float(drawn[3]) > 10 * float(before[3])  # the rarest attribute is lifted from 0.5%


def test_sampler_is_deterministic_per_seed_and_epoch() -> None:
    w = balanced_weights(_labels(50, [5, 20]), 0.3)
    a, b = BalancedSampler(w, seed=7), BalancedSampler(w, seed=7)
    first = list(a)
    assert first == list(b)  # same seed, same epoch
    assert list(a) != first  # the next epoch draws anew
    b.set_epoch(1)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(BalancedSampler(w, seed=8)) != first
    assert len(first) == 50


def test_rate_weight_cap_limits_an_attribute_in_one_image() -> None:
    """An attribute in 1 of 1,000 images cannot reach 0.3 without one image weighing ~430: capped."""
    w = balanced_weights(_labels(1000, [1]), 0.3)
    assert float(w[0]) == MAX_IMAGE_WEIGHT
    with pytest.raises(ValueError, match="fraction in"):
        balanced_weights(_labels(10, [1]), 1.0)


def _sun_samples(y: torch.Tensor) -> list[Sample]:
    return [Sample(image=torch.zeros(3, 4, 4), id=f"s{i}", source="sun", attributes=y[i]) for i in range(len(y))]


def test_dataset_labels_reads_wrapped_sets() -> None:
    y = _labels(12, [3, 5])
    ds = _sun_samples(y)
    torch.testing.assert_close(dataset_labels(ds), y)
    torch.testing.assert_close(dataset_labels(Subset(ds, [4, 1, 9])), y[[4, 1, 9]])
    holder = SimpleNamespace(labels=y)  # SunAttributes / CsvDataset keep their labels as a tensor
    wrapped = Subset(torch.utils.data.TensorDataset(y), [0, 2])
    wrapped.dataset = holder  # type: ignore[assignment]
    torch.testing.assert_close(dataset_labels(wrapped), y[[0, 2]])


def test_datamodule_uses_the_balanced_sampler_and_refuses_ddp() -> None:
    y = _labels(40, [2, 10])
    dm = SiamDataModule(train={"sun": _sun_samples(y)}, batch_sizes={"sun": 8}, seed=0, balanced_sampling=0.25)
    loader = dm.train_dataloader().iterables["sun"]
    assert isinstance(loader.sampler, BalancedSampler)
    assert dm.sampling_rates is not None
    assert dm.sampling_rates["before"][0] == pytest.approx(0.05)
    assert dm.sampling_rates["after"][0] == pytest.approx(0.25, abs=1e-4)
    dm.trainer = SimpleNamespace(world_size=2)  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="single-process"):
        dm.train_dataloader()
    plain = SiamDataModule(train={"sun": _sun_samples(y)}, batch_sizes={"sun": 8}, seed=0)
    assert not isinstance(plain.train_dataloader().iterables["sun"].sampler, BalancedSampler)


@pytest.mark.parametrize(
    ("key", "value"),
    [("data.balanced_sampling", 1.5), ("data.balanced_sampling", True), ("data.balanced_sampling", 0),
     ("optim.presence_pos_weight", "rare"), ("optim.presence_pos_weight", -1.0)],
)
def test_bad_rare_attribute_options_are_refused(key: str, value: object) -> None:
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict({section: {name: value}})


def test_rare_attribute_options_default_to_the_paper() -> None:
    cfg = config_from_dict({})
    assert cfg.data.balanced_sampling is None and cfg.optim.presence_pos_weight == "none"
    assert config_from_dict({"optim": {"presence_pos_weight": 3}}).optim.presence_pos_weight == 3.0


@pytest.mark.parametrize(("name", "key", "value"), [
    ("truth_quick_pos_weight.yaml", "optim.presence_pos_weight", "balanced"),
    ("truth_quick_balanced.yaml", "data.balanced_sampling", 0.1),
])
def test_truth_budgets_for_rare_attributes_set_their_key_in_every_stage(tmp_path, name, key, value) -> None:
    """configs/truth_quick_{pos_weight,balanced}.yaml = the quick budget + one rare-attribute option."""
    from tests.models.test_presence_pooling import _budget_stage_configs

    section, field = key.split(".")
    cfgs = _budget_stage_configs(name, tmp_path)
    assert cfgs and all(getattr(getattr(c, section), field) == value for c in cfgs.values())
