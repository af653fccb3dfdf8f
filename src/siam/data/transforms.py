"""Preprocessing records and the two transform presets (the only place images become tensors).

:class:`Preprocessing` is the single description of how an image becomes a model input; it is
saved inside every checkpoint so that inference always matches training.

Presets (paper Sec. 4.1; sizes configurable for small images, e.g. ``resize=144, crop=128``):

* :func:`eval_transform` -- deterministic: resize to ``resize x resize``, centre crop ``crop``,
  normalise;
* :func:`train_transform` -- *one* bilinear resampling straight from the decoded pixels that
  resizes to ``resize x resize``, rotates by a uniform angle in ``[-max_rotation, max_rotation]``
  degrees about the image centre, takes a uniform random ``crop x crop`` window and flips
  horizontally with probability 1/2, with normalisation fused in. Pixels the rotation brings in from
  outside the image take the mean colour (0 after normalisation). Sources more than twice
  ``resize`` on a side are first reduced to ``resize x resize`` with the antialiased uint8 resize,
  so large photos do not alias; without rotation the resize is that antialiased resize and the
  crop is exact.

Both accept a ``PIL.Image`` (any mode; converted to RGB), a ``(3, H, W)`` uint8 tensor or an
``(H, W, 3)`` uint8 array, and return a ``(3, crop, crop)`` float32 tensor. Images stay uint8 through
any resize (torch's fast uint8 path); floats appear only in the last step, the warp or crop that
feeds normalisation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

__all__ = [
    "Preprocessing",
    "EvalTransform",
    "TrainTransform",
    "TrainParams",
    "eval_transform",
    "train_transform",
    "to_uint8_tensor",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes a normalised tensor.

    ``resize``: the square side images are resized to (paper: 500); ``crop``: the side of the
    training random crop and of the evaluation centre crop (paper: 450); ``mean``/``std``: per
    channel, applied to [0, 1] pixels (ImageNet statistics, unlike the authors' code, which divides
    by 255 twice and never normalises); ``max_rotation``: degrees, training only (paper: 5);
    ``hflip``: random horizontal flips in training.
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
        if not 0 <= self.max_rotation <= 180:
            raise ValueError(f"max_rotation must be in [0, 180] degrees, got {self.max_rotation}")

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


# --- helpers ------------------------------------------------------------------------------------

ImageLike = Image.Image | torch.Tensor | np.ndarray


def to_uint8_tensor(image: ImageLike) -> torch.Tensor:
    """A ``(3, H, W)`` uint8 view of ``image`` (PIL in any mode, HWC uint8 array, or CHW tensor).

    PIL and numpy inputs are copied once and returned as a channels-last view, the layout torch's
    uint8 antialiased resize is fastest on.
    """
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        arr = np.array(image, dtype=np.uint8, copy=True)  # (H, W, 3), writable
        return torch.from_numpy(arr).permute(2, 0, 1)  # (3, H, W)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an (H, W, 3) uint8 array, got shape {image.shape} dtype {image.dtype}"
            )
        if not (image.flags.writeable and image.flags.c_contiguous):
            image = np.array(image, order="C", copy=True)
        return torch.from_numpy(image).permute(2, 0, 1)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(
                f"expected a (3, H, W) uint8 tensor, got shape {tuple(image.shape)} dtype {image.dtype}"
            )
        return image
    raise TypeError(
        f"expected a PIL image, an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor, "
        f"got {type(image).__name__}"
    )


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (1, 3, size, size) uint8, bilinear with antialiasing."""
    return tvf.resize(x.unsqueeze(0), [size, size], antialias=True)  # (1, 3, size, size)


class _Normalise:
    def __init__(self, pre: Preprocessing) -> None:
        self.pre = pre
        inv_std = 1.0 / torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = inv_std / 255.0  # (1, 3, 1, 1)
        self._shift = -torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * inv_std  # (1, 3, 1, 1)

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (1, 3, h, w) in any layout -> planar float32 (1, 3, h, w), ``(x / 255 - mean) / std``.

        One converting copy straight into the planar layout (converting first and transposing the
        floats after is several times slower), then in-place multiply and add (faster than ``addcmul``).
        """
        out = x.to(torch.float32, memory_format=torch.contiguous_format)  # (1, 3, h, w), planar
        return out.mul_(self._scale).add_(self._shift)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pre})"


class EvalTransform(_Normalise):
    """Deterministic preset: resize, centre crop, normalise. ``__call__(image) -> (3, crop, crop)``."""

    def __call__(self, image: ImageLike) -> torch.Tensor:
        pre = self.pre
        x = _resize_uint8(to_uint8_tensor(image), pre.resize)  # (1, 3, R, R) uint8
        top = (pre.resize - pre.crop) // 2
        x = x[:, :, top : top + pre.crop, top : top + pre.crop]  # (1, 3, C, C) uint8
        return self.normalised(x)[0]  # (3, C, C)


class TrainParams(NamedTuple):
    """One draw of the training augmentation: degrees (counter-clockwise), crop corner, flip."""

    angle: float
    top: int
    left: int
    flip: bool


class TrainTransform(_Normalise):
    """Random preset (paper Sec. 4.1): resize + rotate + random crop + flip in one resampling.

    ``__call__(image) -> (3, crop, crop)`` draws :class:`TrainParams` from torch's global RNG (or
    ``generator``), so DataLoader worker seeding makes it reproducible.
    """

    def __init__(self, pre: Preprocessing, *, generator: torch.Generator | None = None) -> None:
        super().__init__(pre)
        self.generator = generator

    def sample_params(self) -> TrainParams:
        pre, g = self.pre, self.generator
        u = torch.rand(4, generator=g).tolist()
        span = pre.resize - pre.crop + 1
        return TrainParams(
            angle=(2.0 * u[0] - 1.0) * pre.max_rotation,
            top=min(int(u[1] * span), span - 1),
            left=min(int(u[2] * span), span - 1),
            flip=bool(pre.hflip and u[3] < 0.5),
        )

    def apply(self, image: ImageLike, params: TrainParams) -> torch.Tensor:
        """The augmentation with fixed ``params`` -> (3, crop, crop) float32.

        Geometry: output pixel (i, j) is pixel (top + i, left + j') of the image resized to
        ``resize x resize`` and rotated by ``angle`` degrees counter-clockwise about its centre
        (j' = crop - 1 - j when flipped). Normalised sampling coordinates do not depend on the
        image size, so one ``grid_sample`` reads the decoded pixels directly (the resize folds into
        the affine map) unless the source is more than twice ``resize`` on a side, which is first
        reduced with the antialiased uint8 resize. Without rotation: uint8 resize + exact crop.
        """
        pre, c = self.pre, self.pre.crop
        x = to_uint8_tensor(image)  # (3, H, W) uint8
        if params.angle == 0.0 or max(x.shape[-2:]) > 2 * pre.resize:
            if tuple(x.shape[-2:]) != (pre.resize, pre.resize):
                x = _resize_uint8(x, pre.resize)[0]  # (3, R, R) uint8, antialiased
        if params.angle == 0.0:  # exact crop of the (antialiased) resize: no warp
            out = self.normalised(x[None, :, params.top : params.top + c, params.left : params.left + c])
            return (out.flip(-1) if params.flip else out)[0]  # (3, C, C)
        src = self.normalised(x.unsqueeze(0))  # (1, 3, H, W): outside the image -> 0 = the mean colour
        grid = _warp_grid(pre.resize, c, params)  # (1, C, C, 2)
        out = nnf.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out[0]  # (3, C, C)

    def __call__(self, image: ImageLike) -> torch.Tensor:
        return self.apply(image, self.sample_params())


def _warp_grid(size: int, crop: int, p: TrainParams) -> torch.Tensor:
    """Sampling grid (1, crop, crop, 2) in ``grid_sample`` coordinates of a (size x size) image.

    Output pixel (i, j) is pixel (top + i, left + j') of the image rotated by ``p.angle`` degrees
    counter-clockwise about its centre, with j' = crop - 1 - j when flipped (same convention as
    ``torchvision`` ``rotate`` + ``crop`` + ``horizontal_flip``). Normalised coordinates (-1 and 1
    are the image's outer edges) are the same for any image size, so the grid also samples the
    source before its resize to ``size``. The map is separable, grid[i, j] = U[j] + V[i]: each
    plane is one broadcast add written in place.
    """
    a = math.radians(p.angle)
    k = 2.0 / size
    cos, sin = math.cos(a) * k, math.sin(a) * k
    centre = size / 2.0
    ys = torch.arange(crop, dtype=torch.float32) + (p.top + 0.5 - centre)  # (C,) rows
    xs = torch.arange(crop, dtype=torch.float32) + (p.left + 0.5 - centre)  # (C,) columns
    if p.flip:
        xs = xs.flip(0)
    grid = torch.empty(1, crop, crop, 2)  # (1, C, C, 2)
    torch.add((ys * -sin)[:, None], (xs * cos)[None, :], out=grid[0, :, :, 0])  # x: cos dx - sin dy
    torch.add((ys * cos)[:, None], (xs * sin)[None, :], out=grid[0, :, :, 1])  # y: sin dx + cos dy
    return grid


# --- presets ------------------------------------------------------------------------------------

def eval_transform(pre: Preprocessing) -> EvalTransform:
    """Deterministic: resize to ``pre.resize`` (square), centre crop ``pre.crop``, normalise.

    Returns a callable ``image -> (3, crop, crop) float tensor``.
    """
    return EvalTransform(pre)


def train_transform(pre: Preprocessing, *, generator: torch.Generator | None = None) -> TrainTransform:
    """Random: resize to ``pre.resize``, rotate up to ``pre.max_rotation`` degrees, random crop
    ``pre.crop``, horizontal flip, normalise (paper Sec. 4.1), in one resampling from the decoded
    pixels (see :meth:`TrainTransform.apply`)."""
    return TrainTransform(pre, generator=generator)
