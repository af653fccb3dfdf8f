"""Typed samples and batches shared by every dataset.

A joint SIAM batch mixes SUN images (attribute labels, no score) and ScenicOrNot images (score,
no labels). Missing targets are ``None`` in a :class:`Sample` and masked in a :class:`Batch`,
never encoded as sentinel values.

Several targets: a sample carries ``scores`` (one value or None per target, in the data's target
order) and a batch ``scores`` / ``scores_mask`` (B, T); ``score`` / ``score_mask`` /
``variance`` / ``variance_mask`` stay the one-target view of target 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

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
    scores / variances: one value (or None) per target, for data with several targets (CSV
    targets.csv); a reader of one target may give ``score`` / ``variance`` alone. After
    construction ``score == scores[0]`` and ``variance == variances[0]`` (None without targets).
    """

    image: torch.Tensor
    id: str
    source: Source
    attributes: torch.Tensor | None = None
    score: float | None = None
    variance: float | None = None
    masks: torch.Tensor | None = None
    masks_valid: torch.Tensor | None = None
    scores: tuple[float | None, ...] | None = None
    variances: tuple[float | None, ...] | None = None

    def __post_init__(self) -> None:
        self.scores, self.score = _one_and_all(self.scores, self.score, "score", self.id)
        self.variances, self.variance = _one_and_all(self.variances, self.variance, "variance", self.id)
        if self.scores is not None and self.variances is not None and len(self.variances) != len(self.scores):
            raise ValueError(f"sample {self.id!r}: {len(self.variances)} variances for {len(self.scores)} targets")


def _one_and_all(
    many: tuple[float | None, ...] | None, one: float | None, what: str, sid: str
) -> tuple[tuple[float | None, ...] | None, float | None]:
    """Reconcile the per-target tuple and its target-0 value (either may be given)."""
    if many is None:
        return ((one,) if one is not None else None), one
    many = tuple(None if v is None else float(v) for v in many)
    if not many:
        raise ValueError(f"sample {sid!r}: {what}s must hold one value per target, got an empty tuple")
    if one is not None and many[0] != float(one):
        raise ValueError(f"sample {sid!r}: {what}={one!r} disagrees with {what}s[0]={many[0]!r}")
    return many, many[0]


@dataclass
class Batch:
    """A collated batch; masks say which targets exist.

    image (B, 3, H, W); attributes (B, K) with attributes_mask (B,) bool (rows without labels are
    zeros); scores / variances (B, T) with scores_mask / variances_mask (B, T) bool (T = 1 when no
    row has a target); ``score`` / ``variance`` / ``score_mask`` / ``variance_mask`` (B,) are the
    views of target 0. masks (B, K, m, m) with
    masks_valid (B, K) bool (False for rows without masks, whose coverage is zeros); both None
    when no sample of the batch has masks.
    """

    image: torch.Tensor
    ids: list[str]
    sources: list[str]
    attributes: torch.Tensor | None
    attributes_mask: torch.Tensor
    scores: torch.Tensor
    scores_mask: torch.Tensor
    variances: torch.Tensor
    variances_mask: torch.Tensor
    extra: dict[str, object] = field(default_factory=dict)
    masks: torch.Tensor | None = None
    masks_valid: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    @property
    def num_targets(self) -> int:
        return self.scores.shape[1]

    @property
    def score(self) -> torch.Tensor:
        """(B,) target 0."""
        return self.scores[:, 0]

    @property
    def score_mask(self) -> torch.Tensor:
        """(B,) rows with a value of target 0."""
        return self.scores_mask[:, 0]

    @property
    def variance(self) -> torch.Tensor:
        """(B,) variance of target 0."""
        return self.variances[:, 0]

    @property
    def variance_mask(self) -> torch.Tensor:
        """(B,) rows with a variance of target 0."""
        return self.variances_mask[:, 0]

    def to(self, device: torch.device | str) -> "Batch":
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            image=self.image.to(device, non_blocking=True),
            ids=self.ids,
            sources=self.sources,
            attributes=mv(self.attributes),
            attributes_mask=self.attributes_mask.to(device),
            scores=self.scores.to(device),
            scores_mask=self.scores_mask.to(device),
            variances=self.variances.to(device),
            variances_mask=self.variances_mask.to(device),
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
    ts = {len(s.scores) for s in samples if s.scores is not None}
    if len(ts) > 1:
        raise ValueError(f"samples disagree on the number of targets: {sorted(ts)}")
    t = ts.pop() if ts else 1
    score, smask = _stack_targets([s.scores for s in samples], t)  # (B, T)
    var, vmask = _stack_targets([s.variances for s in samples], t)  # (B, T)
    masks, masks_valid = _collate_masks(samples)
    return Batch(
        image=image,
        ids=[s.id for s in samples],
        sources=[s.source for s in samples],
        attributes=attributes,
        attributes_mask=amask,
        scores=score,
        scores_mask=smask,
        variances=var,
        variances_mask=vmask,
        masks=masks,
        masks_valid=masks_valid,
    )


def _stack_targets(values: Sequence[tuple[float | None, ...] | None], t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) values (0 where absent) and (B, T) bool presence."""
    rows = [v if v is not None else (None,) * t for v in values]
    mask = torch.tensor([[x is not None for x in r] for r in rows], dtype=torch.bool).reshape(len(rows), t)
    vals = torch.tensor([[cast(float, x) if x is not None else 0.0 for x in r] for r in rows],
                        dtype=torch.float32).reshape(len(rows), t)
    return vals, mask


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
