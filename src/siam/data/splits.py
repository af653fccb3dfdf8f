"""Train / val / test splits shared by the dataset loaders.

* :func:`scaled_sizes` keeps a default split's proportions for a dataset of another size (e.g. SUN's
  11,414 / 1,497 / 1,429 of 14,340 for a synthetic set of 1,000 images);
* :func:`seeded_split` draws a deterministic random split from a seed (SUN without a split file);
* :func:`ordered_split` cuts consecutive blocks (ScenicOrNot: by ascending ID).

Every function returns one index array per split, in the order ``SPLITS`` = (train, val, test).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from siam.errors import DatasetError

SPLITS: tuple[str, str, str] = ("train", "val", "test")
SPLIT_CHOICES: tuple[str, ...] = (*SPLITS, "all")

__all__ = ["SPLITS", "SPLIT_CHOICES", "check_split", "scaled_sizes", "seeded_split", "ordered_split"]


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLIT_CHOICES`, else raise :class:`DatasetError`."""
    if split not in SPLIT_CHOICES:
        raise DatasetError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_CHOICES)}")
    return split


def _check_sizes(sizes: Sequence[int]) -> tuple[int, int, int]:
    if len(sizes) != 3 or any(not isinstance(s, (int, np.integer)) or s < 0 for s in sizes):
        raise DatasetError(
            f"split sizes must be 3 non-negative integers (train, val, test), got {tuple(sizes)!r}"
        )
    if sum(sizes) == 0:
        raise DatasetError(f"split sizes must not all be 0, got {tuple(sizes)!r}")
    return int(sizes[0]), int(sizes[1]), int(sizes[2])


def scaled_sizes(n: int, default: Sequence[int]) -> tuple[int, int, int]:
    """Split sizes for ``n`` items: ``default`` itself if it sums to ``n``, else its proportions.

    val and test are rounded to the nearest integer, train takes the rest, so the sizes always sum
    to ``n``. ``scaled_sizes(1000, (11414, 1497, 1429)) == (796, 104, 100)``.
    """
    d = _check_sizes(default)
    total = sum(d)
    if n < 0:
        raise DatasetError(f"cannot split a negative number of items ({n})")
    if n == total:
        return d
    val = int(round(n * d[1] / total))
    test = int(round(n * d[2] / total))
    return n - val - test, val, test


def _cut(order: np.ndarray, sizes: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = sizes[0], sizes[0] + sizes[1]
    return order[:a], order[a:b], order[b : b + sizes[2]]


def seeded_split(
    n: int, sizes: Sequence[int], *, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random partition of ``range(n)`` into ``sizes`` (must sum to <= n), fixed by ``seed``.

    Each part is sorted ascending. Uses ``numpy.random.default_rng(seed).permutation(n)``, so it is
    identical on every platform and numpy version that keeps PCG64 stable.
    """
    s = _check_sizes(sizes)
    if sum(s) > n:
        raise DatasetError(f"split sizes {s} need {sum(s)} items, only {n} are available")
    order = np.random.default_rng(seed).permutation(n)
    return tuple(np.sort(part) for part in _cut(order, s))  # type: ignore[return-value]


def ordered_split(n: int, sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive blocks of ``range(n)``: the first ``sizes[0]`` items train, then val, then test."""
    s = _check_sizes(sizes)
    if sum(s) > n:
        raise DatasetError(f"split sizes {s} need {sum(s)} items, only {n} are available")
    return _cut(np.arange(n), s)
