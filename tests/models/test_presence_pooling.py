"""Presence pooling: the mean (the paper) or log-sum-exp (model.presence_pooling: lse, an option)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import siam
from siam.data.transforms import Preprocessing
from siam.errors import ConfigError
from siam.models.config import ModelConfig
from siam.models.heads import AttributeHead
from siam.training.config import config_from_dict

VALUES = [[0.0, 1.0], [2.0, 3.0]]  # a hand-set 2x2 map
ROOT = Path(__file__).resolve().parents[2]


def _budget_stage_configs(name: str, tmp_path: Path) -> dict:
    """Every stage's TrainConfig under ``configs/<name>`` (a truth budget: configs/truth_short.yaml + keys)."""
    from siam.quickstart import RECIPE, stage_configs
    from siam.truth.config import read_budget

    _, budget = read_budget(ROOT / "configs" / name)
    _, short = read_budget(ROOT / "configs" / "truth_short.yaml")  # the epochs the option files keep
    assert budget.seeds == short.seeds and set(short.overrides) < set(budget.overrides)
    raw, overrides = budget.recipe(RECIPE)
    return stage_configs(tmp_path, tmp_path / "world", raw, list(overrides))


def _identity_head(grid: int, border: int, **kw: object) -> AttributeHead:
    """One attribute whose map is the (non-negative) input feature itself."""
    head = AttributeHead(1, 1, grid=grid, border=border, **kw)
    with torch.no_grad():
        head.conv.weight.fill_(1.0)
        head.conv.bias.zero_()
    return head


def _lse(cells: list[float], r: float) -> float:
    return math.log(sum(math.exp(r * a) for a in cells) / len(cells)) / r


def test_lse_presence_is_hand_computed() -> None:
    head = _identity_head(2, 0, presence_pooling="lse", presence_lse_r=2.0)
    with torch.no_grad():
        maps, presence = head(torch.tensor(VALUES)[None, None])
    # (1/2) log((e^0 + e^2 + e^4 + e^6) / 4) = (1/2) log(116.604) = 2.3794; tanh -> 0.98299
    # (the mean, 1.5, gives 0.90515)
    want = math.tanh(0.5 * math.log((1 + math.exp(2) + math.exp(4) + math.exp(6)) / 4))
    assert want == pytest.approx(0.982994, abs=1e-6)
    assert float(presence) == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(maps[0, 0], torch.tensor(VALUES))  # the maps themselves are unchanged


@pytest.mark.parametrize(("denominator", "zeros"), [("centre", 0), ("grid", 12)])
def test_lse_pools_the_same_cells_as_the_mean(denominator: str, zeros: int) -> None:
    """grid 4, border 1: the 2x2 centre; 'grid' also counts the 12 zeroed border cells."""
    head = _identity_head(4, 1, presence_pooling="lse", presence_lse_r=1.5, presence_denominator=denominator)
    x = torch.full((1, 1, 4, 4), 9.0)  # the border's 9s are masked out
    x[0, 0, 1:3, 1:3] = torch.tensor(VALUES)
    with torch.no_grad():
        _, presence = head(x)
    want = math.tanh(_lse([0.0, 1.0, 2.0, 3.0] + [0.0] * zeros, 1.5))
    assert float(presence) == pytest.approx(want, rel=1e-6)


def test_lse_lies_between_the_mean_and_the_max() -> None:
    x = torch.tensor(VALUES)[None, None]
    with torch.no_grad():
        act = {r: float(_identity_head(2, 0, presence="sigmoid", presence_pooling="lse", presence_lse_r=r)(x)[1])
               for r in (0.01, 1.0, 100.0)}
    mean, top = torch.sigmoid(torch.tensor(1.5)).item(), torch.sigmoid(torch.tensor(3.0)).item()
    assert act[0.01] == pytest.approx(mean, abs=2e-3)  # r -> 0: the mean (+ r/2 x variance 1.25)
    assert mean < act[1.0] < top
    assert act[100.0] == pytest.approx(top, abs=0.01)  # r -> inf: the max (within log(4) / r)


def test_lse_sends_the_gradient_to_the_strongest_cells() -> None:
    grads = {}
    for pooling in ("mean", "lse"):
        x = (torch.tensor(VALUES)[None, None] + 1.0).requires_grad_(True)  # > 0: ReLU passes gradients
        _identity_head(2, 0, presence_pooling=pooling, presence_lse_r=2.0)(x)[1].sum().backward()
        grads[pooling] = x.grad[0, 0].flatten()
    assert torch.allclose(grads["mean"], grads["mean"][0].expand(4))  # the mean: every cell alike
    g = grads["lse"]
    assert bool((g[1:] > g[:-1]).all()) and float(g[3] / g[0]) == pytest.approx(math.exp(6), rel=1e-4)


def test_default_is_the_mean_and_r_is_ignored_there() -> None:
    x = torch.tensor(VALUES)[None, None]
    with torch.no_grad():
        outs = [_identity_head(2, 0, presence_lse_r=r)(x)[1] for r in (0.5, 50.0)]
    assert AttributeHead(1, 1, grid=2, border=0).presence_pooling == "mean"
    assert float(outs[0]) == float(outs[1]) == pytest.approx(math.tanh(1.5), rel=1e-7)


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"presence_pooling must be 'mean' or 'lse', got 'max'"):
        AttributeHead(1, 1, grid=2, border=0, presence_pooling="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"presence_lse_r must be a finite number > 0, got 0"):
        AttributeHead(1, 1, grid=2, border=0, presence_pooling="lse", presence_lse_r=0)
    with pytest.raises(ConfigError, match=r"model.presence_pooling: got 'max'; allowed: 'mean' \| 'lse'"):
        config_from_dict({"model": {"presence_pooling": "max"}})
    with pytest.raises(ConfigError, match=r"model.presence_lse_r: got -1.0; allowed: a finite float > 0"):
        config_from_dict({"model": {"presence_lse_r": -1}})


def test_the_choice_is_saved_and_old_files_read_as_mean(tmp_path) -> None:
    cfg = config_from_dict({"model": {"presence_pooling": "lse", "presence_lse_r": 3}})
    assert (cfg.model.presence_pooling, cfg.model.presence_lse_r) == ("lse", 3.0)
    assert config_from_dict({}).model.presence_pooling == "mean"
    model = siam.build_model(backbone="tiny", attributes=("a", "b"), grid=5, border=1, presence_pooling="lse",
                             presence_lse_r=3.0, preprocessing=Preprocessing(resize=40, crop=40)).eval()
    loaded = siam.load_checkpoint(siam.save_checkpoint(model, tmp_path / "m.safetensors")).eval()
    assert (loaded.attribute_head.presence_pooling, loaded.attribute_head.presence_lse_r) == ("lse", 3.0)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).presence, model(x).presence)
    old = ModelConfig(attributes=("a",)).to_dict()
    old.pop("presence_pooling"), old.pop("presence_lse_r")  # a file written before the option existed
    assert ModelConfig.from_dict(old).presence_pooling == "mean"


def test_the_lse_truth_budget_sets_it_for_every_stage_and_the_paper_keeps_the_mean(tmp_path) -> None:
    from siam.training.config import STAGES, load_config

    cfgs = _budget_stage_configs("truth_quick_lse.yaml", tmp_path)
    assert all((c.model.presence_pooling, c.model.presence_lse_r) == ("lse", 10.0) for c in cfgs.values())
    for stage in STAGES:
        assert load_config(ROOT / "configs" / "paper.yaml", stage=stage).model.presence_pooling == "mean"


def test_the_128px_truth_budget_pools_a_16x16_feature_grid_to_the_planted_8x8(tmp_path) -> None:
    """configs/truth_quick_128px.yaml: 128 px input, model grid 8; each map cell is the mean of
    2x2 ReLU cells of the tiny backbone's 16x16 grid (hand-pooled here), presence the mean of those."""
    from siam.training.engine import build_stage_model

    cfgs = _budget_stage_configs("truth_quick_128px.yaml", tmp_path)
    assert all((c.preprocessing.resize, c.preprocessing.crop) == (128, 128) for c in cfgs.values())
    siam_cfgs = [c for s, c in cfgs.items() if s != "baseline"]
    assert all((c.model.grid, c.model.border, c.model.presence_pooling) == (8, 0, "mean") for c in siam_cfgs)
    model = build_stage_model(siam_cfgs[0], ("a", "b")).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        features = model.backbone(x)
        fine = torch.relu(model.attribute_head.conv(features))  # (2, 2, 16, 16)
        out = model(x)
    assert fine.shape[-2:] == (16, 16)
    by_hand = fine.reshape(2, 2, 8, 2, 8, 2).mean((3, 5))  # (2, 2, 8, 8) 2x2 block means
    torch.testing.assert_close(out.maps, by_hand)
    torch.testing.assert_close(out.presence, torch.tanh(fine.mean((2, 3))))
