"""The unconstrained baseline (paper Sec. 4.2): the same backbone regressing the score directly.

score = b + w . GAP(F); its class activation map (CAM, Zhou et al. 2016) is the regressor applied
before pooling, cam = w . F + b, so ``score == cam.mean((1, 2))`` exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from siam.data.transforms import Preprocessing
from siam.models.backbones import Backbone, build_backbone, check_backbone_name
from siam.models.config import ModelConfig
from siam.models.siam import _default_preprocessing, check_image_batch
from siam.models.timm_backbones import check_input_size

__all__ = ["Baseline", "BaselineOutput", "build_baseline"]


@dataclass
class BaselineOutput:
    """score: (B,); cam: (B, h, w) with score = cam.mean((1, 2)); variance: (B,) or None."""

    score: torch.Tensor
    cam: torch.Tensor
    variance: torch.Tensor | None = None


class Baseline(nn.Module):
    """Backbone -> global average pooling -> linear regressor (score, optionally variance)."""

    def __init__(
        self, backbone: Backbone, config: ModelConfig, *, preprocessing: Preprocessing, bias: float = 0.0
    ) -> None:
        super().__init__()
        self.config = config
        self.preprocessing = preprocessing
        self.backbone = backbone
        outputs = 2 if config.predict_variance else 1
        self.regressor = nn.Linear(backbone.out_channels, outputs)
        with torch.no_grad():
            self.regressor.weight.normal_(0.0, 0.01)
            self.regressor.bias.zero_()
            self.regressor.bias[0] = float(bias)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.config.attributes

    def forward(self, x: torch.Tensor) -> BaselineOutput:
        check_image_batch(x)
        features = self.backbone(x)  # (B, C, h, w)
        w = self.regressor.weight[0]  # (C,)
        cam = torch.einsum("bchw,c->bhw", features, w) + self.regressor.bias[0]  # (B, h, w)
        score = cam.mean((1, 2))  # (B,) == w . GAP(F) + b
        variance = None
        if self.config.predict_variance:
            pooled = features.mean((2, 3))  # (B, C)
            variance = nn.functional.softplus(pooled @ self.regressor.weight[1] + self.regressor.bias[1])
        return BaselineOutput(score=score, cam=cam, variance=variance)

    def set_bias(self, value: float) -> None:
        with torch.no_grad():
            self.regressor.bias[0] = float(value)


def build_baseline(
    *,
    backbone: str = "resnet50",
    pretrained: bool | str | os.PathLike[str] | None = False,
    bias: float = 0.0,
    predict_variance: bool = False,
    preprocessing: Preprocessing | None = None,
) -> Baseline:
    """Build the baseline regressor on backbone ``backbone`` (same registry as SIAM)."""
    check_backbone_name(backbone)
    net = build_backbone(name=backbone, pretrained=pretrained)
    spec = net.spec
    config = ModelConfig(
        kind="baseline", backbone=backbone, attributes=(), grid=spec.default_grid, border=0,
        predict_variance=predict_variance,
    )
    pre = preprocessing or _default_preprocessing(spec, None)
    check_input_size(backbone, spec.fixed_input, pre.crop)
    return Baseline(net, config, preprocessing=pre, bias=bias)
