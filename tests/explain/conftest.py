"""Hand-set tiny models (no training needed) and small images for the explanation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siam
from siam.data.transforms import Preprocessing
from siam.models.baseline import Baseline
from siam.models.siam import SIAM

NAMES = ("trees", "road", "ocean", "clouds", "grass")
PRE = Preprocessing(resize=72, crop=64)
TARGETS = ("beauty", "safety")


def make_siam(seed: int = 0, *, names: tuple[str, ...] = NAMES, pre: Preprocessing = PRE,
              targets: tuple[str, ...] = ("score",)) -> SIAM:
    """A tiny SIAM with non-trivial, signed contributions: positive maps (conv bias > 0), random
    non-negative templates and random mixing weights (so E_i has both signs); with several
    ``targets`` each gets its own random templates and bias 5, 2, -1, ..."""
    torch.manual_seed(seed)
    bias = 5.0 if len(targets) == 1 else [5.0 - 3.0 * t for t in range(len(targets))]
    model = siam.build_model(backbone="tiny", attributes=list(names), grid=8, border=0, preprocessing=pre,
                             bias=bias, targets=targets)
    with torch.no_grad():
        conv = model.attribute_head.conv
        conv.weight.normal_(0.0, 0.05)
        conv.bias.uniform_(0.01, 0.05)
        model.template_head.templates.uniform_(0.0, 1.0)
        model.template_head.mixing.normal_(0.0, 1.0)
    return model.eval()


def make_baseline(seed: int = 1, *, pre: Preprocessing = PRE) -> Baseline:
    torch.manual_seed(seed)
    model = siam.build_baseline(backbone="tiny", bias=5.0, preprocessing=pre)
    with torch.no_grad():
        model.regressor.weight.normal_(0.0, 0.05)
    return model.eval()


def make_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A smooth random RGB image (width, height) = size."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


@pytest.fixture(scope="session")
def model() -> SIAM:
    return make_siam()


@pytest.fixture(scope="session")
def model2() -> SIAM:
    """Two targets, beauty and safety, over the same attribute maps."""
    return make_siam(targets=TARGETS)


@pytest.fixture(scope="session")
def baseline() -> Baseline:
    return make_baseline()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    return {
        "siam": siam.save_checkpoint(make_siam(), d / "siam.safetensors"),
        "baseline": siam.save_checkpoint(make_baseline(), d / "baseline.safetensors"),
        "siam2": siam.save_checkpoint(make_siam(targets=TARGETS), d / "siam2.safetensors"),
    }


@pytest.fixture()
def image() -> Image.Image:
    return make_image(0)
