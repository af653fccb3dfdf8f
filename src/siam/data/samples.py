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
    """

    image: torch.Tensor
    id: str
    source: Source
    attributes: torch.Tensor | None = None
    score: float | None = None
    variance: float | None = None


@dataclass
class Batch:
    """A collated batch; masks say which targets exist.

    image (B, 3, H, W); attributes (B, K) with attributes_mask (B,) bool (rows without labels are
    zeros); score / variance (B,) with score_mask / variance_mask (B,) bool.
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
    )
