"""The one interface every dataset reader implements: :class:`Reader`.

The readers -- :class:`~siam.data.sun_attributes.SunAttributes`,
:class:`~siam.data.scenic_or_not.ScenicOrNot`, :class:`~siam.data.csv_folder.CsvDataset` and
:class:`~siam.data.son_attributes.SonAttributeSet` -- all derive from
:class:`~siam.data.robust.ImageDataset`, which implements this protocol (and gives the defaults
below to a reader without some target). Code that needs "a dataset of images with targets"
types against ``Reader``; ``isinstance(x, Reader)`` checks that the members exist (a
``runtime_checkable`` protocol, so a reader need not derive from the base).

Members, for a reader of ``n`` images and ``K = len(attributes)`` attributes:

* ``source`` (the :class:`~siam.data.samples.Sample` source), ``name`` (for logs and reports).
* ``attributes`` -- the K attribute names, ``()`` for a reader without attribute labels.
* ``labels`` -- (n, K) float32 in [0, 1] (fraction of annotators), or None without attribute
  labels. A CSV folder has NaN rows for images without a row in attributes.csv.
* ``scores`` / ``variances`` -- (n,) float32 (the mean rating and its vote variance), or None
  without a target. A CSV folder has NaN for images without a target (or variance).
* ``ids`` (n str, unique) and ``paths`` (n image files), in item order; ``missing`` -- ids whose
  image file was absent, left out of ``ids`` (see :func:`~siam.data.robust.check_missing_images`).
* ``len(reader) == n``; ``reader[i]`` -> :class:`~siam.data.samples.Sample` with ``id == ids[i]``,
  ``attributes`` = ``labels[i]`` (or None), ``score`` = ``scores[i]`` (or None), ``variance`` =
  ``variances[i]`` when the reader was asked for it (else None); ``image_path(i) == paths[i]``.
  Negative indices count from the end; others out of range raise ``IndexError``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from siam.data.samples import Sample, Source

__all__ = ["Reader", "son_reader", "sun_reader"]


@runtime_checkable
class Reader(Protocol):
    """A dataset reader: images with their attribute labels and/or target (module docstring)."""

    source: Source
    name: str
    attributes: tuple[str, ...]
    labels: torch.Tensor | None  # (n, K) float32
    scores: torch.Tensor | None  # (n,) float32
    variances: torch.Tensor | None  # (n,) float32
    ids: list[str]
    paths: list[Path]
    missing: list[str]

    def __len__(self) -> int:
        """n, the number of images (those whose file exists)."""
        ...

    def __getitem__(self, index: int) -> Sample:
        """Item ``index``: the decoded, transformed image with its targets."""
        ...

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        ...


def son_reader(
    root: str | os.PathLike[str], split: str, *, transform: Any = None, seed: int = 0,
    splits_file: str | os.PathLike[str] | None = None,
) -> Reader:
    """The ScenicOrNot-role reader of a data folder in either layout (detected from its contents,
    :func:`siam.data.csv_folder.data_layout`): ``root/son`` or the rows of targets.csv (rows
    without a ``split`` drawn with ``seed``, or read from ``splits_file``)."""
    from siam.data.csv_folder import CsvDataset, data_layout

    r = Path(root)
    if data_layout(r) == "csv":
        return CsvDataset(r, split, rows="targets", transform=transform, seed=seed, splits_file=splits_file)
    from siam.data.scenic_or_not import ScenicOrNot

    return ScenicOrNot(r / "son", split, transform=transform)


def sun_reader(
    root: str | os.PathLike[str], split: str, *, attributes: Sequence[str] | None = None, transform: Any = None,
    seed: int = 0,
) -> Reader:
    """The SUN-role reader of a data folder in either layout: ``root/sun`` or the rows of
    attributes.csv (rows without a ``split`` drawn with ``seed``)."""
    from siam.data.csv_folder import CsvDataset, data_layout

    r = Path(root)
    if data_layout(r) == "csv":
        return CsvDataset(r, split, rows="attributes", attributes=attributes, transform=transform, seed=seed)
    from siam.data.sun_attributes import SunAttributes

    return SunAttributes(r / "sun", split, transform=transform, attributes=attributes)

