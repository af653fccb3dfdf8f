"""Pure metric functions on arrays (paper Sec. 4.2, Tables 2 and 3).

* SoN: :func:`rmse` and Kendall's tau-b (:func:`kendall_tau_b`).
* SUN: per-attribute average precision with labels >= 0.5 positive, and their mean
  (:func:`attribute_ap`); an attribute without positives is excluded and listed.
* :func:`pearson_r` (NaN when either side is constant) and :func:`annotator_agreement` (Fleiss'
  kappa of the annotators behind fractional labels).

Average precision is torchmetrics' (the step-wise definition of sklearn); tau-b is scipy's
O(n log n) implementation (torchmetrics' is quadratic in memory/time, too slow for ~20k test
images). Tests cross-check all of them against sklearn/scipy/torchmetrics on fixed arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "POSITIVE_THRESHOLD",
    "rmse",
    "kendall_tau_b",
    "pearson_r",
    "average_precision",
    "AttributeAP",
    "attribute_ap",
    "annotator_agreement",
    "infer_raters",
]

POSITIVE_THRESHOLD = 0.5  # a SUN label (fraction of annotators) >= 0.5 counts as present


def _vec(x: object, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _pair(x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vec(x, "x"), _vec(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same length, got {a.shape[0]} and {b.shape[0]}")
    if a.size == 0:
        raise ValueError("cannot compute a metric on empty arrays")
    return a, b


def rmse(pred: object, target: object) -> float:
    """Root mean squared error sqrt(mean((pred - target)^2)) of two (N,) arrays."""
    a, b = _pair(pred, target)
    return float(np.sqrt(np.mean((a - b) ** 2)))


def kendall_tau_b(x: object, y: object) -> float:
    """Kendall's tau-b (ties in either ranking corrected) of two (N,) arrays; NaN if constant."""
    from scipy.stats import kendalltau

    a, b = _pair(x, y)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(kendalltau(a, b, variant="b").statistic)


def pearson_r(x: object, y: object) -> float:
    """Pearson correlation of two (N,) arrays; NaN when N < 2 or either side is constant."""
    a, b = _pair(x, y)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    return float(np.clip((a @ b) / math.sqrt(float(a @ a) * float(b @ b)), -1.0, 1.0))


def average_precision(scores: object, positives: object) -> float:
    """Average precision (area under the step-wise precision-recall curve, as sklearn) of one
    attribute; NaN when there is no positive."""
    from torchmetrics.functional.classification import binary_average_precision

    s, p = _pair(scores, positives)
    target = torch.as_tensor(p > 0.5, dtype=torch.long)
    if int(target.sum()) == 0:
        return math.nan
    return float(binary_average_precision(torch.as_tensor(s), target))


@dataclass
class AttributeAP:
    """Per-attribute AP (only attributes with positives), their mean, and the excluded names."""

    per_attribute: dict[str, float]
    mean_ap: float
    excluded: list[str] = field(default_factory=list)
    positives: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "mean_ap": _none_if_nan(self.mean_ap),
            "per_attribute": {k: _none_if_nan(v) for k, v in self.per_attribute.items()},
            "excluded_no_positives": list(self.excluded),
            "positives": dict(self.positives),
        }


def _none_if_nan(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def attribute_ap(
    scores: object,
    labels: object,
    names: Sequence[str],
    *,
    threshold: float = POSITIVE_THRESHOLD,
) -> AttributeAP:
    """AP per attribute of ``scores`` (N, K) against ``labels`` (N, K), positive when
    ``label >= threshold``; the mean over attributes with at least one positive (Table 3's mAP)."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.float64)
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"scores and labels must both be (N, K), got {s.shape} and {y.shape}")
    if len(names) != s.shape[1]:
        raise ValueError(f"got {len(names)} attribute names for K={s.shape[1]} columns")
    if s.shape[0] == 0:
        raise ValueError("cannot compute AP on zero samples")
    per: dict[str, float] = {}
    excluded: list[str] = []
    positives: dict[str, int] = {}
    for k, name in enumerate(names):
        pos = y[:, k] >= threshold
        positives[name] = int(pos.sum())
        if not pos.any():
            excluded.append(name)
            continue
        per[name] = average_precision(s[:, k], pos.astype(np.float64))
    mean = float(np.mean(list(per.values()))) if per else math.nan
    return AttributeAP(per_attribute=per, mean_ap=mean, excluded=excluded, positives=positives)


def infer_raters(fractions: object, *, max_raters: int = 20, tol: float = 1e-4) -> int | None:
    """The smallest R in 2..``max_raters`` such that every label is a multiple of 1/R (labels that
    are fractions of R annotators), or None."""
    f = np.asarray(fractions, dtype=np.float64)
    f = f[np.isfinite(f)]
    for r in range(2, max_raters + 1):
        if np.all(np.abs(f * r - np.round(f * r)) < tol * r):
            return r
    return None


def annotator_agreement(fractions: object, names: Sequence[str], *, raters: int | None = None) -> dict[str, object]:
    """Fleiss' kappa of R annotators' binary labels, from the fraction who marked each attribute.

    ``fractions``: (N, K) in [0, 1], each a multiple of 1/R (``raters``; inferred when None). For
    attribute k with n_ik = R f_ik "yes" votes on item i: P_i = (n_ik (n_ik - 1) + (R - n_ik)
    (R - n_ik - 1)) / (R (R - 1)), P_e = p^2 + (1 - p)^2 with p = mean f_ik, and kappa = (mean P_i -
    P_e) / (1 - P_e). Returns per-attribute kappa (None when an attribute is never or always
    marked, P_e = 1), their mean and R; ``{"raters": None}`` when R cannot be inferred.
    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != len(names):
        raise ValueError(f"fractions must be (N, K={len(names)}), got shape {f.shape}")
    r = raters if raters is not None else infer_raters(f)
    if r is None:
        return {"raters": None, "fleiss_kappa": None, "per_attribute": {}}
    if r < 2:
        raise ValueError(f"agreement needs at least 2 annotators, got raters={r}")
    n_yes = np.round(f * r)
    p_item = (n_yes * (n_yes - 1) + (r - n_yes) * (r - n_yes - 1)) / (r * (r - 1))  # (N, K)
    p = f.mean(0)
    p_e = p**2 + (1 - p) ** 2
    per: dict[str, float | None] = {}
    for k, name in enumerate(names):
        per[name] = None if p_e[k] >= 1 - 1e-12 else float((p_item[:, k].mean() - p_e[k]) / (1 - p_e[k]))
    vals = [v for v in per.values() if v is not None]
    return {"raters": int(r), "fleiss_kappa": float(np.mean(vals)) if vals else None, "per_attribute": per}
