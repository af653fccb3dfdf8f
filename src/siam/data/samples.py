"""Typed samples and batches shared by every dataset.

A joint SIAM batch mixes SUN images (attribute labels, no score) and ScenicOrNot images (score,
no labels). Missing targets are ``None`` in a :class:`Sample` and masked in a :class:`Batch`,
never encoded as sentinel values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

Source = Literal["sun", "son", "son_attributes", "images", "csv"]

__all__ = ["Sample", "Batch", "collate"]


@dataclass
class Sample:
    """One example.

    image: (3, H, W) float, normalised. attributes: (K,) float in [0, 1] (fraction of annotators)
    or None. score: the mean rating (ScenicOrNot Average) or None; variance: the vote variance or
    None. id: dataset-specific identifier (SUN row index, SoN ID, file path); source: dataset.
    masks: (K, m, m) float in [0, 1], the coverage of each model-grid cell by each attribute's mask
    (optional mask supervision), with masks_valid (K,) bool: which attributes the mask annotates;
    both None for an image without masks.
    """

    image: torch.Tensor
    id: str
    source: Source
    attributes: torch.Tensor | None = None
    score: float | None = None
    variance: float | None = None
    masks: torch.Tensor | None = None
    masks_valid: torch.Tensor | None = None


@dataclass
class Batch:
    """A collated batch; masks say which targets exist.

    image (B, 3, H, W); attributes (B, K) with attributes_mask (B,) bool (rows without labels are
    zeros); score / variance (B,) with score_mask / variance_mask (B,) bool. masks (B, K, m, m) with
    masks_valid (B, K) bool (False for rows without masks, whose coverage is zeros); both None
    when no sample of the batch has masks.
    """

    image: torch.Tensor
    ids: list[str]
    sources: list[str]
    attributes: torch.Tensor | None
    attributes_mask: torch.Tensor
    score: torch.Tensor
    score_mask: torch.Tensor
    variance: torch.Tensor
    variance_mask: torch.Tensor
    extra: dict[str, object] = field(default_factory=dict)
    masks: torch.Tensor | None = None
    masks_valid: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            image=self.image.to(device, non_blocking=True),
            ids=self.ids,
            sources=self.sources,
            attributes=mv(self.attributes),
            attributes_mask=self.attributes_mask.to(device),
            score=self.score.to(device),
            score_mask=self.score_mask.to(device),
            variance=self.variance.to(device),
            variance_mask=self.variance_mask.to(device),
            extra=self.extra,
            masks=mv(self.masks),
            masks_valid=mv(self.masks_valid),
        )


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack samples into a :class:`Batch` (a DataLoader ``collate_fn``)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    image = torch.stack([s.image for s in samples])  # (B, 3, H, W)
    ks = {s.attributes.shape[0] for s in samples if s.attributes is not None}
    if len(ks) > 1:
        raise ValueError(f"samples disagree on the number of attributes: {sorted(ks)}")
    attributes = None
    if ks:
        k = ks.pop()
        attributes = torch.stack(
            [s.attributes.float() if s.attributes is not None else torch.zeros(k) for s in samples]
        )  # (B, K)
    amask = torch.tensor([s.attributes is not None for s in samples])
    score = torch.tensor([s.score if s.score is not None else 0.0 for s in samples], dtype=torch.float32)
    smask = torch.tensor([s.score is not None for s in samples])
    var = torch.tensor([s.variance if s.variance is not None else 0.0 for s in samples], dtype=torch.float32)
    vmask = torch.tensor([s.variance is not None for s in samples])
    masks, masks_valid = _collate_masks(samples)
    return Batch(
        image=image,
        ids=[s.id for s in samples],
        sources=[s.source for s in samples],
        attributes=attributes,
        attributes_mask=amask,
        score=score,
        score_mask=smask,
        variance=var,
        variance_mask=vmask,
        masks=masks,
        masks_valid=masks_valid,
    )


def _collate_masks(samples: Sequence[Sample]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(B, K, m, m) coverage and (B, K) validity; zeros / False for samples without masks."""
    have = [s for s in samples if s.masks is not None]
    if not have:
        return None, None
    shapes = {tuple(s.masks.shape) for s in have}  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise ValueError(f"samples disagree on the mask shape: {sorted(shapes)}")
    shape = shapes.pop()
    masks = torch.stack([s.masks.float() if s.masks is not None else torch.zeros(shape) for s in samples])
    valid = torch.stack([
        (s.masks_valid.bool() if s.masks_valid is not None else torch.ones(shape[0], dtype=torch.bool))
        if s.masks is not None else torch.zeros(shape[0], dtype=torch.bool)
        for s in samples
    ])  # (B, K)
    return masks, valid
