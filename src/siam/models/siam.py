"""The SIAM model (Marcos, Lobry & Tuia, "Semantically Interpretable Activation Maps", ICCVW 2019).

    image x --f--> attribute maps A (B, K, m, m) --g--> score y = b + sum_i <E_i, A_i>

* f (Sec. 3.1): backbone -> 1x1 conv -> ReLU -> K non-negative maps; presence = tanh(mean(A_i)).
* g (Sec. 3.2): spatial templates E_i; contribution of attribute i is c_i = <E_i, A_i>, and its
  contribution map E_i * A_i says *where* it added to or took from the score.

The forward pass returns every quantity of the explanation (:class:`SIAMOutput`), so no hooks are
needed. ``score == bias + contributions.sum(1) == bias + contribution_maps.sum((1, 2, 3))`` up
to float rounding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from siam.data.transforms import Preprocessing
from siam.models.backbones import Backbone, BackboneSpec, build_backbone, check_backbone_name
from siam.models.config import ModelConfig, check_target_names
from siam.models.heads import AttributeHead, PresenceActivation, PresenceDenominator, PresencePooling, TemplateHead
from siam.models.timm_backbones import check_input_size, default_grid, is_timm_name
from siam.vocab import validate_attributes

__all__ = ["SIAM", "SIAMOutput", "build_model", "check_image_batch", "target_index"]


@dataclass
class SIAMOutput:
    """What the model saw, where, and how much it mattered.

    maps: (B, K, m, m) non-negative attribute maps A_i (border zeroed).
    presence: (B, K) attribute presence in [0, 1) (tanh) or (0.5, 1) (sigmoid).
    scores: (B, T) predicted scores y_t = b_t + sum_i <E_{t,i}, A_i>, one per target.
    all_contributions: (B, T, K) signed contributions c_{t,i} = <E_{t,i}, A_i>.
    all_contribution_maps: (B, T, K, m, m) E_{t,i} * A_i; sums to ``all_contributions``.
    biases: (T,) the intercepts b_t.
    variances: (B, T) predicted vote variances, or None.
    targets: the T target names; ``target``: the index the one-target fields below show.

    One-target view (of target ``target``; :meth:`for_target` picks another):
    contributions (B, K), contribution_maps (B, K, m, m), score (B,), bias (), variance (B,).
    """

    maps: torch.Tensor
    presence: torch.Tensor
    scores: torch.Tensor
    all_contributions: torch.Tensor
    all_contribution_maps: torch.Tensor
    biases: torch.Tensor
    variances: torch.Tensor | None = None
    targets: tuple[str, ...] = ("score",)
    target: int = 0

    @property
    def num_targets(self) -> int:
        return self.scores.shape[1]

    @property
    def score(self) -> torch.Tensor:
        """(B,) y_t of the shown target."""
        return self.scores[:, self.target]

    @property
    def contributions(self) -> torch.Tensor:
        """(B, K) c_{t,i} of the shown target."""
        return self.all_contributions[:, self.target]

    @property
    def contribution_maps(self) -> torch.Tensor:
        """(B, K, m, m) E_{t,i} * A_i of the shown target."""
        return self.all_contribution_maps[:, self.target]

    @property
    def bias(self) -> torch.Tensor:
        """() b_t of the shown target."""
        return self.biases[self.target]

    @property
    def variance(self) -> torch.Tensor | None:
        """(B,) predicted variance of the shown target, or None."""
        return None if self.variances is None else self.variances[:, self.target]

    @property
    def total_map(self) -> torch.Tensor:
        """(B, m, m) total contribution map of the shown target: sum_i E_{t,i} * A_i."""
        return self.contribution_maps.sum(1)

    def for_target(self, target: int | str) -> "SIAMOutput":
        """The same output showing target ``target`` (an index or a name) in the one-target fields."""
        return replace(self, target=target_index(self.targets, target))


def target_index(targets: Sequence[str], target: int | str) -> int:
    """Index of ``target`` (a name or an index) in ``targets``; ``ValueError`` naming the choices."""
    names = list(targets)
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise ValueError(f"target must be a name or an index, got {target!r}; targets: {names}")
    if isinstance(target, str):
        if target in names:
            return names.index(target)
        if target.lstrip("-").isdigit():
            target = int(target)
        else:
            raise ValueError(f"unknown target {target!r}; this model predicts {names}")
    if not -len(names) <= target < len(names):
        raise ValueError(f"target index {target} out of range; this model predicts {len(names)}: {names}")
    return target % len(names)


def check_image_batch(x: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a float (B, 3, H, W) batch."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"expected an image batch of shape (B, 3, H, W) (RGB, normalised), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"expected a float tensor (normalised RGB), got dtype {x.dtype}")


class SIAM(nn.Module):
    """f (backbone + :class:`AttributeHead`) followed by g (:class:`TemplateHead`)."""

    def __init__(
        self,
        backbone: Backbone,
        config: ModelConfig,
        *,
        preprocessing: Preprocessing,
        bias: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        k = len(config.attributes)
        self.config = config
        self.preprocessing = preprocessing
        self.backbone = backbone
        self.attribute_head = AttributeHead(
            backbone.out_channels, k, grid=config.grid, border=config.border, presence=config.presence,
            presence_denominator=config.presence_denominator, presence_pooling=config.presence_pooling,
            presence_lse_r=config.presence_lse_r,
        )
        self.template_head = TemplateHead(
            k,
            grid=config.grid,
            num_targets=len(config.targets),
            template_init=config.template_init,
            bias=bias,
            predict_variance=config.predict_variance,
        )

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.config.attributes

    @property
    def num_attributes(self) -> int:
        return len(self.config.attributes)

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the T scores g predicts (``("score",)`` for one-target models)."""
        return self.config.targets

    def attribute_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f: images (B, 3, H, W) -> (maps (B, K, m, m), presence (B, K))."""
        check_image_batch(x)
        features = self.backbone(x)  # (B, C, h, w)
        return self.attribute_head(features)  # (B, K, m, m), (B, K)

    def forward(self, x: torch.Tensor) -> SIAMOutput:
        maps, presence = self.attribute_maps(x)  # (B, K, m, m), (B, K)
        g = self.template_head(maps)
        return SIAMOutput(
            maps=maps,
            presence=presence,
            scores=g["score"],  # (B, T)
            all_contributions=g["contributions"],  # (B, T, K)
            all_contribution_maps=g["contribution_maps"],  # (B, T, K, m, m)
            biases=self.template_head.bias,  # (T,)
            variances=g.get("variance"),  # (B, T) or None
            targets=self.targets,
        )

    def effective_templates(self, target: int | str = 0) -> torch.Tensor:
        """(K, m, m) effective templates E_{t,i} of one target (Fig. 4 of the paper)."""
        return self.template_head.effective_templates()[target_index(self.targets, target)]

    def project_(self) -> None:
        """Clamp the templates to >= 0; call after every optimiser step."""
        self.template_head.project_()

    def template_l1(self) -> torch.Tensor:
        return self.template_head.l1()

    def template_roughness(self) -> torch.Tensor:
        """Squared neighbour differences of the effective templates (see ``TemplateHead.roughness``)."""
        return self.template_head.roughness()

    def set_bias(self, value: float | Sequence[float]) -> None:
        """Set b_t, e.g. to the mean training score of each target (the paper's initialisation);
        one float sets every target's."""
        if isinstance(value, torch.Tensor):
            value = value.tolist() if value.ndim else float(value)
        with torch.no_grad():
            if isinstance(value, (int, float)):
                self.template_head.bias.fill_(float(value))
            else:
                vals = [float(v) for v in value]
                if len(vals) != len(self.targets):
                    raise ValueError(f"set_bias needs one value or {len(self.targets)} (one per target), got {len(vals)}")
                self.template_head.bias.copy_(torch.tensor(vals))


def _default_preprocessing(spec: BackboneSpec, input_size: int | None) -> Preprocessing:
    """The paper's 500/450 resize/crop scaled to the backbone's default input, with the
    normalisation its weights expect."""
    crop = input_size or spec.default_input
    resize = round(crop * 500 / 450)
    return Preprocessing(resize=resize, crop=crop, mean=spec.mean, std=spec.std)


def build_model(
    *,
    backbone: str = "resnet50",
    attributes: Sequence[str] | None = None,
    pretrained: bool | str | os.PathLike[str] | None = False,
    grid: int | None = None,
    border: int = 2,
    presence: PresenceActivation = "tanh",
    presence_denominator: PresenceDenominator = "centre",
    presence_pooling: PresencePooling = "mean",
    presence_lse_r: float = 10.0,
    template_init: float = 0.01,
    bias: float | Sequence[float] = 0.0,
    predict_variance: bool = False,
    preprocessing: Preprocessing | None = None,
    targets: Sequence[str] = ("score",),
) -> SIAM:
    """Build a SIAM model.

    Args:
        backbone: ``"resnet50"`` (paper), ``"resnet18"``, ``"tiny"`` (CPU tests, quickstart) or
            ``"timm:<name>"`` (any timm model with a feature map; C and the stride read from it).
        attributes: attribute names; K = len(attributes). ``None``: the paper's 33 SUN attributes.
        pretrained: ``False``, ``"imagenet"`` (local cache only; for timm backbones also ``"timm"``:
            timm's pretrained weights from the local hub cache) or a weights file path.
        grid: template size m; default from the backbone (15 for ResNets at 450 px); for timm
            backbones ceil(crop / stride), the crop of ``preprocessing`` (default 450).
        border: masked border in cells (paper: 2, i.e. the central 11x11 of 15x15 counts).
        presence: ``"tanh"`` (default, as the authors' code) or ``"sigmoid"`` (as the paper text).
        presence_denominator: presence = act(sum of the map / n), n = the centre cells
            (``"centre"``, default) or all m^2 cells (``"grid"``, as the authors' code).
        presence_pooling: ``"mean"`` (the paper) or ``"lse"``: act((1/r) log mean exp(r A)) over the
            same n cells, r = ``presence_lse_r`` (not in the paper; sharper maps, see README).
        template_init: the constant all templates start from (no randomness).
        bias: initial b (one float, or one per target); set it to the mean training score.
        predict_variance: also predict the vote variance.
        preprocessing: how images are prepared; default resize/crop = 500/450 scaled to the
            backbone's default input.
        targets: names of the T scores g predicts, each with its own templates, w and b over the
            same attribute maps (the paper: one, scenicness).
    """
    check_backbone_name(backbone)
    names = validate_attributes(attributes)
    if grid is not None and int(grid) < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    net = build_backbone(name=backbone, pretrained=pretrained)
    spec = net.spec
    pre = preprocessing or _default_preprocessing(spec, None)
    check_input_size(backbone, spec.fixed_input, pre.crop)
    if grid is not None:
        m = int(grid)
    elif is_timm_name(backbone):
        m = default_grid(spec.stride, pre.crop)
    else:
        m = spec.default_grid
    if m < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    config = ModelConfig(
        kind="siam",
        backbone=backbone,
        attributes=names,
        grid=m,
        border=border,
        presence=presence,
        presence_denominator=presence_denominator,
        presence_pooling=presence_pooling,
        presence_lse_r=float(presence_lse_r),
        template_init=template_init,
        predict_variance=predict_variance,
        targets=check_target_names(list(targets)),
    )
    return SIAM(net, config, preprocessing=pre, bias=bias)
