"""The unconstrained baseline (paper Sec. 4.2): the same backbone regressing the score directly.

score = b + w . GAP(F); its class activation map (CAM, Zhou et al. 2016) is the regressor applied
before pooling, cam = w . F + b, so ``score == cam.mean((1, 2))`` exactly. With T targets the
regressor has one (w_t, b_t) per target (rows 0..T-1 of one linear layer; with the variance, rows
T..2T-1 predict each target's variance), so a one-target file (rows: score, variance) loads as is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from siam.data.transforms import Preprocessing
from siam.models.backbones import Backbone, build_backbone, check_backbone_name
from siam.models.config import ModelConfig, check_target_names
from siam.models.siam import _default_preprocessing, check_image_batch, target_index
from siam.models.timm_backbones import check_input_size

__all__ = ["Baseline", "BaselineOutput", "build_baseline"]


@dataclass
class BaselineOutput:
    """scores: (B, T); cams: (B, T, h, w) with scores = cams.mean((2, 3)); variances: (B, T) or None.

    One-target view of target ``target`` (default 0; :meth:`for_target` picks another): ``score``
    (B,), ``cam`` (B, h, w), ``variance`` (B,) or None. Built from one target's ``score`` / ``cam``
    / ``variance`` alone, the (B, 1) fields are filled from them.
    """

    score: torch.Tensor | None = None
    cam: torch.Tensor | None = None
    variance: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    cams: torch.Tensor | None = None
    variances: torch.Tensor | None = None
    targets: tuple[str, ...] = ("score",)
    target: int = 0

    def __post_init__(self) -> None:
        if self.scores is None:
            if self.score is None or self.cam is None:
                raise ValueError("BaselineOutput needs scores and cams (or one target's score and cam)")
            self.scores, self.cams = self.score[:, None], self.cam[:, None]
            self.variances = None if self.variance is None else self.variance[:, None]
        if self.cams is None:
            raise ValueError("BaselineOutput needs cams with its scores")
        self.score = self.scores[:, self.target]
        self.cam = self.cams[:, self.target]
        self.variance = None if self.variances is None else self.variances[:, self.target]

    def for_target(self, target: int | str) -> "BaselineOutput":
        """The same output showing target ``target`` (an index or a name) in the one-target fields."""
        return replace(self, target=target_index(self.targets, target))


class Baseline(nn.Module):
    """Backbone -> global average pooling -> linear regressor (score, optionally variance)."""

    def __init__(
        self, backbone: Backbone, config: ModelConfig, *, preprocessing: Preprocessing,
        bias: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.config = config
        self.preprocessing = preprocessing
        self.backbone = backbone
        t = len(config.targets)
        outputs = 2 * t if config.predict_variance else t
        self.regressor = nn.Linear(backbone.out_channels, outputs)
        with torch.no_grad():
            self.regressor.weight.normal_(0.0, 0.01)
            self.regressor.bias.zero_()
        self.set_bias(bias)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.config.attributes

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the T scores the regressor predicts."""
        return self.config.targets

    def forward(self, x: torch.Tensor) -> BaselineOutput:
        check_image_batch(x)
        t = len(self.targets)
        features = self.backbone(x)  # (B, C, h, w)
        w = self.regressor.weight[:t]  # (T, C)
        cams = torch.einsum("bchw,tc->bthw", features, w) + self.regressor.bias[:t, None, None]  # (B, T, h, w)
        scores = cams.mean((2, 3))  # (B, T) == w_t . GAP(F) + b_t
        variances = None
        if self.config.predict_variance:
            pooled = features.mean((2, 3))  # (B, C)
            variances = nn.functional.softplus(pooled @ self.regressor.weight[t:].T + self.regressor.bias[t:])  # (B, T)
        return BaselineOutput(scores=scores, cams=cams, variances=variances, targets=self.targets)

    def set_bias(self, value: float | Sequence[float]) -> None:
        """Set b_t (one float: every target's), e.g. to each target's mean training score."""
        t = len(self.targets)
        if isinstance(value, torch.Tensor):
            value = value.tolist() if value.ndim else float(value)
        vals = [float(value)] * t if isinstance(value, (int, float)) else [float(v) for v in value]
        if len(vals) != t:
            raise ValueError(f"set_bias needs one value or {t} (one per target), got {len(vals)}")
        with torch.no_grad():
            self.regressor.bias[:t] = torch.tensor(vals)


def build_baseline(
    *,
    backbone: str = "resnet50",
    pretrained: bool | str | os.PathLike[str] | None = False,
    bias: float | Sequence[float] = 0.0,
    predict_variance: bool = False,
    preprocessing: Preprocessing | None = None,
    targets: Sequence[str] = ("score",),
) -> Baseline:
    """Build the baseline regressor on backbone ``backbone`` (same registry as SIAM); ``targets``:
    the names of the T scores it regresses (``bias``: one float or one per target)."""
    check_backbone_name(backbone)
    net = build_backbone(name=backbone, pretrained=pretrained)
    spec = net.spec
    config = ModelConfig(
        kind="baseline", backbone=backbone, attributes=(), grid=spec.default_grid, border=0,
        predict_variance=predict_variance, targets=check_target_names(list(targets)),
    )
    pre = preprocessing or _default_preprocessing(spec, None)
    check_input_size(backbone, spec.fixed_input, pre.crop)
    return Baseline(net, config, preprocessing=pre, bias=bias)
