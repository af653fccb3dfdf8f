"""A timm ConvNeXt and EfficientNet trained end to end (sun, then son-head) on tiny synthetic data;
the model files reload to identical outputs, with the timm backbone named in their config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import siam
from siam.data.datamodule import SiamDataModule
from siam.data.samples import Sample
from siam.training.engine import fit

from .helpers import NAMES, samples, tiny_config

CROP = 64  # 2x2 feature map at stride 32


def _upsampled(kind: str, n: int, seed: int) -> list[Sample]:
    """The helpers' samples at CROP px (so a stride-32 network sees a 2x2 map, not one cell)."""
    return [dataclasses.replace(s, image=F.interpolate(s.image[None], size=(CROP, CROP), mode="nearest")[0])
            for s in samples(kind, n, seed)]


def _config(out: Path, stage: str, backbone: str, **sections: object):  # noqa: ANN202
    return tiny_config(out, stage, model={"backbone": backbone, "grid": None}, trainer={"max_steps": 2},
                       preprocessing={"resize": CROP, "crop": CROP}, **sections)


@pytest.mark.parametrize("backbone", ["timm:convnext_atto", "timm:efficientnet_b0"])
def test_timm_backbone_trains_and_reloads(tmp_path: Path, backbone: str) -> None:
    torch.manual_seed(0)
    sun_dm = SiamDataModule(train={"sun": _upsampled("sun", 16, 1)}, batch_sizes={"sun": 8})
    sun = fit(_config(tmp_path / "sun", "sun", backbone), datamodule=sun_dm, attributes=NAMES)
    assert sun.global_step == 2 and sun.model_path is not None
    head_cfg = _config(tmp_path / "head", "son-head", backbone, init_from=str(sun.model_path))
    son_dm = SiamDataModule(train={"son": _upsampled("son", 16, 2)}, batch_sizes={"son": 8})
    res = fit(head_cfg, datamodule=son_dm, attributes=NAMES, son_train_mean=5.0)
    assert res.global_step == 2
    # f came from the sun stage and stayed frozen; g trained
    f_keys = [k for k in res.model.state_dict() if k.startswith(("backbone.", "attribute_head."))]
    for k in f_keys:
        torch.testing.assert_close(res.model.state_dict()[k], sun.model.state_dict()[k], rtol=0, atol=0, msg=k)
    loaded = siam.load_checkpoint(res.model_path)
    assert loaded.config.backbone == backbone and loaded.meta["model"]["backbone"] == backbone
    assert loaded.config.grid == 2 and loaded.preprocessing.crop == CROP
    x = torch.randn(3, 3, CROP, CROP)
    trained = res.model.eval()
    with torch.no_grad():
        a, b = trained(x), loaded(x)
    for name in ("maps", "presence", "contributions", "contribution_maps", "score"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0, msg=name)
    torch.testing.assert_close(b.score, b.bias + b.contribution_maps.sum((1, 2, 3)), rtol=0, atol=1e-5)
    assert float(b.bias.detach()) != 0.0  # son-head set b to the mean training score and trained it
