"""Model-level statistics behind the figures (pure numpy; JSON-serialisable results).

* :func:`attribute_ranking`: mean |contribution| and the sign of the mean effect per attribute.
* :func:`template_order`: templates (Fig. 4) ordered by mean effect.
* :func:`cooccurrence`: attribute presence against scenicness brackets (Fig. 3).
* :func:`most_disagreeing`, :func:`largest_errors`: which images to show (Sec. 4.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["attribute_ranking", "template_order", "cooccurrence", "most_disagreeing", "largest_errors"]

#: ScenicOrNot scores are 1..10; the default brackets are [1, 2), [2, 3), ..., [9, 10].
SCENIC_EDGES: tuple[float, ...] = tuple(float(v) for v in range(1, 11))


def _as_2d(name: str, a: Any, k: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != k:
        raise ValueError(f"{name} must have shape (N, K={k}), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one image")
    return arr


def attribute_ranking(contributions: Any, attributes: Sequence[str]) -> dict[str, Any]:
    """Rank attributes by mean |c_i| over N images; contributions: (N, K).

    Returns ``{"attributes": [{name, mean_abs, mean, sign, share_positive}], "order": [...]}``
    sorted by mean |c_i| descending; ``sign`` is +1/-1/0 of the mean contribution and
    ``share_positive`` the fraction of images where c_i > 0.
    """
    names = list(attributes)
    c = _as_2d("contributions", contributions, len(names))
    mean_abs = np.abs(c).mean(0)
    mean = c.mean(0)
    order = np.argsort(-mean_abs, kind="stable")
    rows = [
        {
            "name": names[i],
            "mean_abs": float(mean_abs[i]),
            "mean": float(mean[i]),
            "sign": int(np.sign(mean[i])),
            "share_positive": float((c[:, i] > 0).mean()),
        }
        for i in order
    ]
    return {"n_images": int(c.shape[0]), "attributes": rows, "order": [names[i] for i in order]}


def template_order(templates: Any, effect: Any | None = None) -> np.ndarray:
    """Indices of the K templates (K, m, m) from the most positive to the most negative effect.

    The effect of E_i is its mean (the contribution of a uniform unit map), unless ``effect``
    (K,), e.g. the mean contribution over a data set, is given.
    """
    t = np.asarray(templates, dtype=np.float64)
    if t.ndim != 3:
        raise ValueError(f"templates must have shape (K, m, m), got {t.shape}")
    e = t.mean((1, 2)) if effect is None else np.asarray(effect, dtype=np.float64)
    if e.shape != (t.shape[0],):
        raise ValueError(f"effect must have shape (K={t.shape[0]},), got {e.shape}")
    return np.argsort(-e, kind="stable")


def cooccurrence(
    presence: Any, scores: Any, attributes: Sequence[str], *, edges: Sequence[float] = SCENIC_EDGES
) -> dict[str, Any]:
    """Mean attribute presence per scenicness bracket (paper Fig. 3).

    presence: (N, K) attribute presence (labels or predictions); scores: (N,) scenicness.
    Brackets are ``[edges[b], edges[b+1])``, the last one closed; scores outside the edges are
    clipped into the end brackets. Returns mean presence (K, B) (NaN for an empty bracket),
    counts (B,), the Pearson correlation of each attribute with the score (NaN when constant),
    and an attribute order by that correlation (most scenic first).
    """
    names = list(attributes)
    p = _as_2d("presence", presence, len(names))
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (p.shape[0],):
        raise ValueError(f"scores must have shape (N={p.shape[0]},), got {s.shape}")
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges must be at least 2 increasing numbers, got {list(edges)}")
    if not np.all(np.isfinite(s)) or not np.all(np.isfinite(p)):
        raise ValueError("presence and scores must be finite")
    bins = np.clip(np.searchsorted(e, s, side="right") - 1, 0, e.size - 2)  # (N,)
    nb = e.size - 1
    counts = np.bincount(bins, minlength=nb)
    sums = np.zeros((len(names), nb))
    np.add.at(sums.T, bins, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[None, :]
        pc = p - p.mean(0)
        sc = s - s.mean()
        corr = (pc * sc[:, None]).sum(0) / np.sqrt((pc**2).sum(0) * (sc**2).sum())
    order = np.argsort(-np.nan_to_num(corr, nan=-np.inf), kind="stable")
    return {
        "attributes": names,
        "edges": e.tolist(),
        "labels": [f"{e[b]:g}-{e[b + 1]:g}" for b in range(nb)],
        "counts": counts.tolist(),
        "mean_presence": [[None if np.isnan(v) else float(v) for v in row] for row in mean],
        "correlation": [None if np.isnan(v) else float(v) for v in corr],
        "order": [names[i] for i in order],
    }


def _top_abs(values: np.ndarray, n: int) -> list[int]:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [int(i) for i in np.argsort(-np.abs(values), kind="stable")[:n]]


def most_disagreeing(siam_scores: Any, baseline_scores: Any, n: int) -> list[int]:
    """Indices of the n images where |SIAM - baseline| is largest (paper Sec. 4.3)."""
    a = np.asarray(siam_scores, dtype=np.float64)
    b = np.asarray(baseline_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"score arrays must be (N,) of equal length, got {a.shape} and {b.shape}")
    return _top_abs(a - b, n)


def largest_errors(predicted: Any, target: Any, n: int) -> list[int]:
    """Indices of the n images with the largest |predicted - target|."""
    return most_disagreeing(predicted, target, n)
