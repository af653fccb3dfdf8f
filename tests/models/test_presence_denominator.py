"""Presence = tanh(sum of the map / n): n = the centre cells (default) or the whole grid (authors')."""

from __future__ import annotations

import math

import pytest
import torch

import siam
from siam.data.transforms import Preprocessing
from siam.errors import ConfigError
from siam.models.config import ModelConfig
from siam.training.config import config_from_dict

NAMES = ("a", "b")
MAP_VALUE = 0.5  # every map cell, before the border mask


def _constant_maps_model(denominator: str) -> siam.SIAM:
    """grid 5, border 1: 3x3 = 9 centre cells of 25; every map is MAP_VALUE before the mask."""
    model = siam.build_model(backbone="tiny", attributes=NAMES, grid=5, border=1,
                             presence_denominator=denominator, preprocessing=Preprocessing(resize=40, crop=40))
    with torch.no_grad():
        model.attribute_head.conv.weight.zero_()
        model.attribute_head.conv.bias.fill_(MAP_VALUE)
    return model.eval()


@pytest.mark.parametrize(("denominator", "cells"), [("centre", 9), ("grid", 25)])
def test_presence_divides_by_the_chosen_number_of_cells(denominator: str, cells: int) -> None:
    model = _constant_maps_model(denominator)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 40, 40))
    assert float(out.maps.sum(dim=(2, 3))[0, 0]) == pytest.approx(9 * MAP_VALUE)  # border zeroed
    # Hand-computed: centre -> tanh(4.5 / 9) = tanh(0.5) = 0.46212; grid -> tanh(4.5 / 25) = tanh(0.18) = 0.17808.
    want = {"centre": 0.4621171572600098, "grid": 0.17808086811733018}[denominator]
    assert want == pytest.approx(math.tanh(9 * MAP_VALUE / cells))
    torch.testing.assert_close(out.presence, torch.full((2, 2), want))
    assert model.attribute_head.presence_cells == cells


def test_the_choice_is_saved_and_old_files_read_as_centre(tmp_path) -> None:
    path = siam.save_checkpoint(_constant_maps_model("grid"), tmp_path / "m.safetensors")
    loaded = siam.load_checkpoint(path)
    assert loaded.config.presence_denominator == "grid" and loaded.attribute_head.presence_cells == 25
    old = ModelConfig(attributes=NAMES).to_dict()
    old.pop("presence_denominator")  # a file written before the option existed
    assert ModelConfig.from_dict(old).presence_denominator == "centre"


def test_config_key_is_checked() -> None:
    cfg = config_from_dict({"model": {"presence_denominator": "grid"}})
    assert cfg.model.presence_denominator == "grid"
    assert config_from_dict({}).model.presence_denominator == "centre"
    with pytest.raises(ConfigError, match=r"model.presence_denominator: got 'all'; allowed: 'centre' \| 'grid'"):
        config_from_dict({"model": {"presence_denominator": "all"}})
