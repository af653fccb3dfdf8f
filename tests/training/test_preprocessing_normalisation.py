"""Training normalises images as the backbone's weights expect, unless the config says otherwise."""

from __future__ import annotations

import pytest

from siam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siam.errors import ConfigError
from siam.training.config import config_from_dict
from siam.training.engine import build_stage_model

pytest.importorskip("timm")


def _cfg(backbone: str, **pre: object):
    return config_from_dict({"stage": "sun", "model": {"backbone": backbone, "pretrained": False, "border": 0},
                             "preprocessing": {"resize": 96, "crop": 96, **pre}})


def test_mean_std_default_to_the_backbones() -> None:
    # Inception-v3's timm weights expect 0.5 / 0.5, not ImageNet's statistics
    cfg = _cfg("timm:inception_v3")
    assert cfg.preprocessing.mean is None and cfg.preprocessing.std is None
    pre = cfg.preprocessing.build(backbone=cfg.model.backbone)
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    model = build_stage_model(cfg, ("trees", "ocean"))
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.std == (0.5, 0.5, 0.5)
    # the torchvision / tiny backbones: ImageNet's, as before
    tiny = _cfg("tiny")
    assert tiny.preprocessing.build(backbone="tiny").mean == IMAGENET_MEAN
    assert build_stage_model(tiny, ("trees",)).preprocessing.std == IMAGENET_STD


def test_explicit_mean_std_win_and_bad_ones_are_refused() -> None:
    cfg = _cfg("timm:inception_v3", mean=[0.4, 0.4, 0.4], std=[0.2, 0.3, 0.25])
    pre = cfg.preprocessing.build(backbone=cfg.model.backbone)
    assert pre.mean == (0.4, 0.4, 0.4) and pre.std == (0.2, 0.3, 0.25)
    assert build_stage_model(cfg, ("trees",)).preprocessing.mean == (0.4, 0.4, 0.4)
    with pytest.raises(ConfigError, match="preprocessing"):
        _cfg("tiny", mean=[0.5, 0.5])
    with pytest.raises(ConfigError, match="preprocessing"):
        _cfg("tiny", std=[0.2, 0.0, 0.2])
