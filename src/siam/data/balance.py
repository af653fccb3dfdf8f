"""Rare attributes: label frequencies, per-attribute positive weights and attribute-balanced sampling.

Two general mechanisms, both off by default (the paper's recipe):

* :func:`presence_pos_weight` -> the (K,) positive weight of the SUN BCE (``optim.presence_pos_weight``):
  ``"balanced"`` gives attribute k the weight ``min(sqrt(neg_k / pos_k), POS_WEIGHT_CAP)`` from the
  training labels (pos_k = sum of the continuous labels, neg_k = sum of 1 - label; 1 where an
  attribute has no positive or is not rare); a float gives every attribute that weight.
* :class:`BalancedSampler` (``data.balanced_sampling: <rate>``): draws training images with
  replacement, with weights that lift every attribute present (label >= :data:`PRESENT`) in fewer
  than ``rate`` of the drawn images to ``rate``, as far as :data:`MAX_IMAGE_WEIGHT` allows; seeded
  and deterministic per (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, Subset

__all__ = [
    "PRESENT",
    "POS_WEIGHT_CAP",
    "MAX_IMAGE_WEIGHT",
    "dataset_labels",
    "presence_pos_weight",
    "balanced_weights",
    "expected_rates",
    "BalancedSampler",
]

PRESENT = 0.5  # a continuous SUN label at or above this counts as "attribute present" for sampling
POS_WEIGHT_CAP = 10.0  # the largest "balanced" positive weight (an attribute in 1% of images: ~9.9)
MAX_IMAGE_WEIGHT = 50.0  # the largest weight of one image relative to an image that is not lifted
_ROUNDS = 50  # lifting rounds (each lifts every attribute below the rate once, rarest first)
_RATE_TOL = 1e-6  # an attribute within this of the rate counts as reaching it


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """The (N, K) float32 attribute labels of a SUN training set, without decoding images where the
    dataset (or a wrapper of one: Subset, SkipBadImages, CachedImages) holds them; else per sample."""
    inner: Any = ds
    index: list[int] | None = None
    while True:
        if isinstance(inner, Subset):
            idx = list(inner.indices)
            index = idx if index is None else [idx[i] for i in index]
            inner = inner.dataset
        elif hasattr(inner, "samples") and isinstance(inner.samples, list):  # CachedImages
            labels = torch.stack([_attributes(s) for s in inner.samples]).float()
            break
        elif isinstance(getattr(inner, "labels", None), torch.Tensor):  # SunAttributes, CsvDataset
            labels = inner.labels.float()
            break
        elif isinstance(getattr(inner, "dataset", None), Dataset):  # SkipBadImages
            inner = inner.dataset
        else:
            labels = torch.stack([_attributes(inner[i]) for i in range(len(inner))]).float()
            break
    return labels if index is None else labels[index]


def _attributes(sample: Any) -> torch.Tensor:
    if getattr(sample, "attributes", None) is None:
        raise ValueError(f"sample {getattr(sample, 'id', '?')!r} has no attribute labels")
    return torch.as_tensor(sample.attributes)


def presence_pos_weight(labels: torch.Tensor, mode: str | float) -> torch.Tensor | None:
    """Positive weight per attribute (K,) for ``optim.presence_pos_weight`` (None for ``"none"``).

    labels: (N, K) continuous training labels in [0, 1]. ``"balanced"``: sqrt(neg_k / pos_k),
    at least 1 (a frequent attribute is not down-weighted) and at most :data:`POS_WEIGHT_CAP`;
    1 for an attribute without positives. A float: that weight for every attribute.
    """
    if mode == "none":
        return None
    k = labels.shape[-1]
    if not isinstance(mode, str):
        return torch.full((k,), float(mode))
    if mode != "balanced":
        raise ValueError(f"presence_pos_weight: got {mode!r}; allowed: 'none', 'balanced' or a float > 0")
    y = labels.double()
    pos, neg = y.sum(0), (1.0 - y).sum(0)
    ratio = torch.where(pos > 0, neg / pos.clamp_min(1e-12), torch.ones_like(pos))
    return ratio.sqrt().clamp(1.0, POS_WEIGHT_CAP).float()


def balanced_weights(labels: torch.Tensor, rate: float) -> torch.Tensor:
    """Sampling weight per image (N,) that lifts every attribute present in fewer than ``rate`` of
    the weighted draws to ``rate`` (expected), keeping the others' images at weight 1.

    Each round visits the attributes below the rate, rarest first, and multiplies the weights of the
    images showing attribute k by c = rate (W - W_k) / ((1 - rate) W_k), the factor that gives k
    exactly the rate (W: total weight, W_k: weight of k's images); weights stay <= MAX_IMAGE_WEIGHT.
    An attribute present in no image is left alone.
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"balanced sampling rate: got {rate!r}; allowed: a fraction in (0, 1)")
    present = (labels >= PRESENT).double()  # (N, K)
    w = torch.ones(labels.shape[0], dtype=torch.float64)
    for _ in range(_ROUNDS):
        rates = expected_rates(present, w)
        low = [k for k in torch.argsort(rates).tolist() if 0 < rates[k] < rate - _RATE_TOL]
        changed = False
        for k in low:
            mask = present[:, k] > 0
            total, wk = float(w.sum()), float(w[mask].sum())
            if wk / total >= rate - _RATE_TOL:
                continue
            c = rate * (total - wk) / ((1.0 - rate) * wk)
            new = (w[mask] * c).clamp(max=MAX_IMAGE_WEIGHT)
            changed = changed or bool((new != w[mask]).any())
            w[mask] = new
        if not changed:
            break
    return w.float()


def expected_rates(present: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(K,) expected fraction of draws showing each attribute: sum_i w_i b_ik / sum_i w_i."""
    w = weights.double()
    return (w[:, None] * present.double()).sum(0) / w.sum()


class BalancedSampler(Sampler[int]):
    """Draws ``num_samples`` indices per epoch with replacement, proportional to ``weights``.

    Deterministic: epoch e draws with a generator seeded by (seed, e); the epoch advances with
    every pass (or :meth:`set_epoch`), so a run with the same seed draws the same images.
    """

    def __init__(self, weights: torch.Tensor, *, num_samples: int | None = None, seed: int = 0) -> None:
        if weights.ndim != 1 or len(weights) == 0 or not bool((weights > 0).all()):
            raise ValueError("BalancedSampler needs a non-empty 1-D tensor of positive weights")
        self.weights = weights.double()
        self.num_samples = int(num_samples or len(weights))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist())

