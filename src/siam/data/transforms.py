"""Preprocessing records and transform presets.

:class:`Preprocessing` is the single description of how an image becomes a model input; it is
saved inside every checkpoint so that inference always matches training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes a normalised tensor.

    ``resize``: the square side images are resized to (paper: 500); ``crop``: the side of the
    training random crop and of the evaluation centre crop (paper: 450); ``mean``/``std``: per
    channel, applied to [0, 1] pixels (ImageNet statistics, unlike the authors' code, which divides
    by 255 twice and never normalises).
    """

    resize: int = 500
    crop: int = 450
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_rotation: float = 5.0
    hflip: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resize <= 0 or self.crop <= 0 or self.crop > self.resize:
            raise ValueError(
                f"need 0 < crop <= resize, got resize={self.resize}, crop={self.crop}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError(f"mean/std must be 3 values with std > 0, got {self.mean}, {self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        allowed = {"resize", "crop", "mean", "std", "max_rotation", "hflip", "extra"}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        d = dict(d)
        if "mean" in d:
            d["mean"] = tuple(float(x) for x in d["mean"])
        if "std" in d:
            d["std"] = tuple(float(x) for x in d["std"])
        return cls(**d)


# --- presets ------------------------------------------------------------------------------------

def eval_transform(pre: Preprocessing):
    """Deterministic: resize to ``pre.resize`` (square), centre crop ``pre.crop``, normalise.

    Returns a callable ``PIL.Image -> (3, crop, crop) float tensor``.
    """
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.PILToTensor(),  # uint8 (3, H, W)
            v2.Resize((pre.resize, pre.resize), antialias=True),
            v2.CenterCrop(pre.crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )


def train_transform(pre: Preprocessing):
    """Random: resize to ``pre.resize``, rotate up to ``pre.max_rotation`` degrees, random crop
    ``pre.crop``, horizontal flip, normalise (paper Sec. 4.1). uint8 until normalisation."""
    import torch
    from torchvision.transforms import v2

    ops = [
        v2.PILToTensor(),
        v2.Resize((pre.resize, pre.resize), antialias=True),
    ]
    if pre.max_rotation > 0:
        ops.append(v2.RandomRotation(pre.max_rotation))
    ops.append(v2.RandomCrop(pre.crop))
    if pre.hflip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    return v2.Compose(ops)
