"""Explaining many images for the model-level figures and the report.

:func:`explain_many` explains each image file (and runs the baseline on it), keeping going past
bad files, which become error records (:func:`~siam.explain.explanation.error_record`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from siam.data.images import DEFAULT_MAX_MEGAPIXELS, load_image
from siam.explain.explanation import BaselineResult, Explanation, error_record, explain, explain_baseline
from siam.models.baseline import Baseline
from siam.models.siam import SIAM

__all__ = ["ExplainedSet", "explain_many"]


@dataclass
class ExplainedSet:
    """Explanations of N images (in input order, failures left out) and what goes with them.

    ``baselines``: the baseline on the same N images, or None; ``labels``: (N,) true scores or None;
    ``failures``: one error record per input that failed.
    """

    attributes: tuple[str, ...]
    explanations: list[Explanation] = field(default_factory=list)
    baselines: list[BaselineResult] | None = None
    labels: np.ndarray | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.explanations)

    def for_target(self, target: int | str) -> ExplainedSet:
        """The same images showing target ``target`` (:meth:`Explanation.for_target`)."""
        return replace(self, explanations=[e.for_target(target) for e in self.explanations])

    @property
    def contributions(self) -> np.ndarray:
        """(N, K) signed contributions."""
        return np.stack([e.contributions for e in self.explanations]) if self.explanations else np.zeros(
            (0, len(self.attributes)))

    @property
    def presence(self) -> np.ndarray:
        """(N, K) attribute presence."""
        return np.stack([e.presence for e in self.explanations]) if self.explanations else np.zeros(
            (0, len(self.attributes)))

    @property
    def scores(self) -> np.ndarray:
        """(N,) SIAM scores."""
        return np.array([e.score for e in self.explanations], dtype=np.float64)

    @property
    def baseline_scores(self) -> np.ndarray | None:
        """(N,) baseline scores, or None."""
        return None if self.baselines is None else np.array([b.score for b in self.baselines], dtype=np.float64)


def explain_many(
    model: SIAM,
    sources: Sequence[str | os.PathLike[str]],
    *,
    baseline: Baseline | None = None,
    labels: Sequence[float] | np.ndarray | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    model_id: dict[str, Any] | None = None,
    baseline_id: dict[str, Any] | None = None,
    on_error: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> ExplainedSet:
    """Explain every image file in ``sources``; a bad file becomes an error record (and a call of
    ``on_error``) instead of stopping the run. ``labels`` (len(sources),) are the true scores."""
    if labels is not None and len(labels) != len(sources):
        raise ValueError(f"labels has {len(labels)} values for {len(sources)} images")
    result = ExplainedSet(attributes=tuple(model.attributes), baselines=[] if baseline is not None else None)
    kept: list[float] = []
    items: Any = list(enumerate(sources))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="explain", unit="image", disable=None)
    for i, src in items:
        name = str(src)
        try:
            image = load_image(src, max_megapixels=max_megapixels)
            expl = explain(model, image, name=name, model_id=model_id, source=src)
            base = explain_baseline(baseline, image, name=name, model_id=baseline_id) if baseline else None
        except (ValueError, OSError) as exc:
            record = error_record(name, exc, model=model, model_id=model_id)
            result.failures.append(record)
            if on_error is not None:
                on_error(record)
            continue
        result.explanations.append(expl)
        if base is not None and result.baselines is not None:
            result.baselines.append(base)
        if labels is not None:
            kept.append(float(labels[i]))
    if labels is not None:
        result.labels = np.asarray(kept, dtype=np.float64)
    return result
