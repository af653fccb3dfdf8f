"""Backbone registry: the feature extractor f of SIAM (paper Sec. 3.1), cut before pooling.

Each backbone maps a normalised image (B, 3, H, W) to features (B, C, H/s, W/s); its
:class:`BackboneSpec` records C (``out_channels``), the stride s and the default grid so that no
channel count is hard-coded elsewhere.

Weights (``pretrained``):

* ``False`` / ``None``: random initialisation.
* ``"imagenet"``: torchvision's ImageNet weights, **only from the local torch hub cache**
  (``$TORCH_HOME/hub/checkpoints``). Nothing is ever downloaded implicitly; when the file is not
  cached, a :class:`~siam.errors.CheckpointError` says which file to fetch and where to put it.
* a path to a ``.pth``/``.pt`` torchvision state dict (loaded with ``weights_only=True``) or a
  ``.safetensors`` file.

``"timm:<name>"`` builds any timm model that exposes a feature map, with C, the stride and the
normalisation read from the model (see :mod:`siam.models.timm_backbones`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from siam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from siam.errors import CheckpointError, ConfigError
from siam.models.timm_backbones import TIMM_PREFIX, build_timm_body, check_timm_name, default_grid, is_timm_name

__all__ = [
    "BackboneSpec", "Backbone", "BACKBONES", "build_backbone", "load_state_dict_file", "check_backbone_name",
    "PAPER_INPUT",
]

#: The paper's input side (500 px resized, 450 px crop); the default input of every backbone.
PAPER_INPUT = 450


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about a backbone."""

    name: str
    out_channels: int
    stride: int
    default_grid: int
    default_input: int
    imagenet_file: str | None = None  # torchvision weight file name, if any
    mean: tuple[float, float, float] = IMAGENET_MEAN  # the normalisation its weights expect
    std: tuple[float, float, float] = IMAGENET_STD
    fixed_input: int | None = None  # the only input side it accepts (ViT, Swin), else None


class Backbone(nn.Module):
    """A feature extractor with its :class:`BackboneSpec` attached."""

    def __init__(self, body: nn.Module, spec: BackboneSpec) -> None:
        super().__init__()
        self.body = body
        self.spec = spec

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, ceil(H/s), ceil(W/s))."""
        return self.body(x)


def _resnet(name: str) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    # Cut before global pooling: conv1 .. layer4.
    return nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _tiny() -> nn.Module:
    """A small CNN (stride 8, 128 channels) fast enough for CPU tests and the quickstart."""
    return nn.Sequential(
        _conv_bn(3, 24, 2),
        _conv_bn(24, 32, 1),
        _conv_bn(32, 48, 2),
        _conv_bn(48, 64, 1),
        _conv_bn(64, 96, 2),
        _conv_bn(96, 128, 1),
        _conv_bn(128, 128, 1),
    )


BACKBONES: dict[str, tuple[BackboneSpec, Callable[[], nn.Module]]] = {
    "resnet50": (
        BackboneSpec("resnet50", 2048, 32, 15, PAPER_INPUT, "resnet50-11ad3fa6.pth"),
        lambda: _resnet("resnet50"),
    ),
    "resnet18": (
        BackboneSpec("resnet18", 512, 32, 15, PAPER_INPUT, "resnet18-f37072fd.pth"),
        lambda: _resnet("resnet18"),
    ),
    "tiny": (BackboneSpec("tiny", 128, 8, 16, 128), _tiny),
}


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict from ``.safetensors`` or a torch file, never unpickling code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file not found: {str(p)!r}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise CheckpointError(f"{p}: not a valid safetensors file ({exc})") from exc
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"{p}: could not be read as a weights-only torch state dict ({exc}); "
            "allowed: a .safetensors file or a torchvision .pth state dict"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a state dict, got {type(obj).__name__}")
    return obj


def _load_pretrained(body: nn.Module, spec: BackboneSpec, pretrained: str | os.PathLike[str]) -> None:
    if str(pretrained) == "imagenet":
        if spec.imagenet_file is None:
            raise CheckpointError(
                f"backbone {spec.name!r} has no ImageNet weights; use pretrained=False or a file"
            )
        hub = Path(torch.hub.get_dir()) / "checkpoints" / spec.imagenet_file
        if not hub.is_file():
            raise CheckpointError(
                f"ImageNet weights for {spec.name!r} are not cached at {hub}. This toolkit never "
                f"downloads silently. Offline: copy torchvision's {spec.imagenet_file} there (or set "
                "TORCH_HOME), or pass its path as pretrained=PATH / --pretrained PATH."
            )
        path: str | os.PathLike[str] = hub
    else:
        path = pretrained
    state = load_state_dict_file(path)
    # Drop the classifier head of a full torchvision network; map names onto the cut body.
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    own = body.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key[len("body."):] if key.startswith("body.") else key
        if k in own:
            mapped[k] = value
            continue
        head, _, rest = k.partition(".")
        if head in names:
            idx = names.index(head)
            cand = f"{idx}.{rest}"
            if cand in own:
                mapped[cand] = value
    missing = [k for k in own if k not in mapped]
    if missing:
        raise CheckpointError(
            f"{path}: weights do not fit backbone {spec.name!r}: {len(missing)} tensors missing "
            f"(first: {missing[:3]}); got keys like {list(state)[:3]}"
        )
    for k, v in mapped.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: tensor {k!r} has shape {tuple(v.shape)}, backbone {spec.name!r} "
                f"expects {tuple(own[k].shape)}"
            )
    body.load_state_dict(mapped, strict=True)


def check_backbone_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is in :data:`BACKBONES` or a known ``"timm:<name>"``."""
    if is_timm_name(name):
        check_timm_name(name)
    elif name not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {name!r}; allowed: {sorted(BACKBONES)} or '{TIMM_PREFIX}<model>' for any timm "
            "model with a feature map (e.g. 'timm:convnext_atto')"
        )


def _build_timm(name: str, pretrained: bool | str | os.PathLike[str] | None) -> Backbone:
    body, facts = build_timm_body(name, pretrained)
    size = facts["fixed_input"] or PAPER_INPUT
    spec = BackboneSpec(
        name, facts["channels"], facts["stride"], default_grid(facts["stride"], size), size,
        mean=facts["mean"] or IMAGENET_MEAN, std=facts["std"] or IMAGENET_STD, fixed_input=facts["fixed_input"],
    )
    return Backbone(body, spec)


def backbone_normalisation(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) the backbone's weights expect: ImageNet's for the torchvision and ``tiny``
    backbones, the pretrained config's for ``timm:<name>`` (ImageNet's when it records none)."""
    check_backbone_name(name)
    if is_timm_name(name):
        from siam.models.timm_backbones import timm_normalisation

        found = timm_normalisation(name)
        if found is not None:
            return found
    return IMAGENET_MEAN, IMAGENET_STD


def build_backbone(
    *, name: str = "resnet50", pretrained: bool | str | os.PathLike[str] | None = False
) -> Backbone:
    """Build backbone ``name`` (one of :data:`BACKBONES`, or ``"timm:<model>"``) with the requested weights."""
    check_backbone_name(name)
    if is_timm_name(name):
        return _build_timm(name, pretrained)
    spec, make = BACKBONES[name]
    body = make()
    if pretrained is True:
        pretrained = "imagenet"
    if pretrained:
        _load_pretrained(body, spec, pretrained)
    return Backbone(body, spec)
