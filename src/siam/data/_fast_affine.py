"""Proposal (benchmarks only, not used by training): the training augmentation as ONE resampling.

:class:`siam.data.transforms.TrainTransform` resizes to ``resize x resize`` (antialiased, uint8),
then rotates + crops + flips with one ``grid_sample``. Normalised sampling coordinates do not
depend on the image size, so the very same grid can sample the *decoded* image directly: the resize
folds into the affine map. This module does that: it converts the decoded pixels to planar float in
one pass, normalises in place (so zero padding is the mean colour, as before), builds the separable
grid with one broadcast add, and samples once (planar float is the layout ``grid_sample``'s CPU
kernel and in-place arithmetic are fastest on; measured 3.7 ms vs 7.2 ms for the current transform
per 640x480 photo on one AVX2 core). Sources more than 2x larger than ``resize`` are first reduced
with the antialiased uint8 resize, so large photos are not aliased (between 1x and 2x, bilinear
sampling without a prefilter aliases mildly); for ScenicOrNot's 640x480 photos and ``resize=500``
there is no reduction (scales 0.78 and 1.04) and no intermediate image at all.

Output geometry equals :class:`~siam.data.transforms.TrainTransform` for the same
:class:`~siam.data.transforms.TrainParams` (same rotation centre, crop window and flip); the pixels
differ only by the skipped intermediate resampling (``benchmarks/bench_data.py`` reports both the
speed and the difference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from siam.data.transforms import (
    ImageLike,
    Preprocessing,
    TrainParams,
    TrainTransform,
    _resize_uint8,
    to_uint8_tensor,
)

__all__ = ["FusedTrainTransform", "fast_train_transform", "sampling_grid"]


def sampling_grid(size: int, crop: int, p: TrainParams) -> torch.Tensor:
    """(1, crop, crop, 2) ``grid_sample`` grid, equal to ``siam.data.transforms._warp_grid``.

    Output pixel (i, j) is pixel (top + i, left + j') of the ``size x size`` image rotated by
    ``p.angle`` degrees about its centre (j' = crop - 1 - j when flipped). The map is affine and
    separable, grid[i, j] = U[j] + V[i], so it is built with one broadcast add instead of a
    (crop^2, 3) x (3, 2) product (``F.affine_grid``) or a stack of two planes.
    """
    a = math.radians(p.angle)
    cos, sin = math.cos(a), math.sin(a)
    k = 2.0 / size
    xs = torch.arange(crop, dtype=torch.float32) + (p.left + 0.5 - size / 2.0)  # (C,) columns
    if p.flip:
        xs = xs.flip(0)
    ys = torch.arange(crop, dtype=torch.float32) + (p.top + 0.5 - size / 2.0)  # (C,) rows
    u = torch.stack((xs * (cos * k), xs * (sin * k)), dim=-1)  # (C, 2): column part
    v = torch.stack((ys * (-sin * k), ys * (cos * k)), dim=-1)  # (C, 2): row part
    return (v[:, None, :] + u[None, :, :]).unsqueeze(0)  # (1, C, C, 2)


class FusedTrainTransform(TrainTransform):
    """:class:`TrainTransform` with resize, rotation, crop and flip fused into one resampling."""

    def __init__(self, pre: Preprocessing, *, generator: torch.Generator | None = None) -> None:
        super().__init__(pre, generator=generator)
        inv = 1.0 / torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = inv / 255.0  # (1, 3, 1, 1)
        self._shift = -torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1) * inv  # (1, 3, 1, 1)

    def apply(self, image: ImageLike, params: TrainParams) -> torch.Tensor:
        pre = self.pre
        x = to_uint8_tensor(image).unsqueeze(0)  # (1, 3, H, W) uint8 (a view of H x W x 3 pixels)
        if max(x.shape[-2:]) > 2 * pre.resize:
            x = _resize_uint8(x[0], pre.resize)  # antialiased reduction of large sources
        src = x.to(torch.float32, memory_format=torch.contiguous_format)  # (1, 3, H, W), planar
        src.mul_(self._scale).add_(self._shift)  # normalised in place: (x / 255 - mean) / std
        grid = sampling_grid(pre.resize, pre.crop, params)  # (1, C, C, 2)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out[0]  # (3, C, C); outside the image -> 0 = the mean colour


def fast_train_transform(pre: Preprocessing, *, generator: torch.Generator | None = None) -> FusedTrainTransform:
    """The fused training augmentation (see the module docstring)."""
    return FusedTrainTransform(pre, generator=generator)
