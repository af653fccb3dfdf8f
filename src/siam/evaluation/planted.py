"""Planted-truth recovery: does a model find the *what*, *where* and *how much* that ``siam synth``
planted? (Quantities of issue 4; the planted score is y = b + sum_i <T_i, pool(M_i)> + noise.)

Notation: T (K, m, m) planted templates on the truth grid m; M_i (H, W) the true mask of attribute
i in an image; pool(M_i) (m, m) its per-cell coverage fraction; A (K, a, a) a model's maps and E
(K, a, a) its effective templates on the model grid a.

* :func:`contribution_r` (how much): mean over attributes present in >= 5 % of the images of the
  Pearson r, across images, between the model's contribution c_i and <T_i, pool(M_i)>.
* :func:`template_r` (templates): Pearson r between E_i (resampled to the truth grid) and T_i over
  the attributes whose T_i varies in space, on the cells where attribute i is observed in the
  evaluation images (:func:`observed_cells`; elsewhere no score constrains E_i);
  :func:`effect_sign_agreement` (reported as ``template_sign_agreement``): the share of
  attributes whose mean effect on the score (mean contribution where present) has the planted sign.
* :func:`mass_in_mask` (where): share of A_i's mass inside M_i, each cell's mass spread evenly over
  its pixels (i.e. A upsampled to image resolution), over the (image, present attribute) pairs; an
  empty map scores 0.
* :func:`total_map_r` (where): per-image Pearson r, on the truth grid, between the model's total
  contribution map sum_i E_i A_i (or a baseline's CAM) and sum_i T_i pool(M_i); averaged. A
  constant predicted map scores 0 for every model; images with a constant planted map are left out.

Explanation checks (per image, for seeds and bootstraps):

* :func:`correctness`: FunnyBirds-style single-deletion correctness, 0.5 * rho + 0.5 with rho the
  Spearman rank correlation, within one image, between each present attribute's attribution and
  its true effect (the change of the model's score when the scene is re-rendered without it).
* :func:`map_spearman`: Spearman between two models' maps of the same image (cascading
  randomisation control). :func:`bootstrap_ci`: percentile bootstrap over images.

All functions take arrays (numpy or torch) and are pure; :class:`PlantedTruth` reads ``truth/`` (of
a ``siam synth`` folder, or of its CSV copy: :func:`load_csv_truth`, images named by CSV path).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
import torch.nn.functional as F

from siam.data.to_csv import IDS_FILE, IDS_HEADER
from siam.errors import DatasetError
from siam.evaluation.metrics import pearson_r

__all__ = [
    "MIN_PRESENCE_SHARE",
    "MIN_PRESENT_IMAGES",
    "contribution_r_per_attribute",
    "map_coverage_r",
    "OBSERVED_CELL_SHARE",
    "PlantedTruth",
    "IDS_FILE",
    "load_truth",
    "load_csv_truth",
    "read_ids",
    "pool_masks",
    "masks_on_model_grid",
    "resample_maps",
    "planted_contributions",
    "planted_total_maps",
    "contribution_r",
    "template_r",
    "effect_sign_agreement",
    "mass_in_mask",
    "total_map_r",
    "constant_maps",
    "observed_cells",
    "correctness",
    "bootstrap_ci",
    "map_spearman",
]

MIN_PRESENCE_SHARE = 0.05  # contribution_r: attributes present in >= 5 % of the test images
MIN_PRESENT_IMAGES = 30  # per-attribute tables: attributes present in >= 30 test images
#: template_r: a truth-grid cell is 'observed' for an attribute when its mean coverage over the
#: evaluation images exceeds this share (0.2 %).
OBSERVED_CELL_SHARE = 0.002


def _t(x: Any) -> torch.Tensor:
    return x.detach().float().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)


# --- resampling ---------------------------------------------------------------------------------


def pool_masks(masks: Any, grid: int) -> torch.Tensor:
    """(..., H, W) bool masks -> (..., grid, grid) coverage fraction per cell (adaptive average)."""
    m = _t(masks)
    lead = m.shape[:-2]
    out = F.adaptive_avg_pool2d(m.reshape(-1, 1, *m.shape[-2:]), grid)  # (n, 1, grid, grid)
    return out.reshape(*lead, grid, grid)


def masks_on_model_grid(masks: Any, grid: int, *, resize: int, crop: int) -> torch.Tensor:
    """(..., H, W) masks -> (..., grid, grid) coverage fractions of the model's cells.

    Follows the evaluation transform: resize to (resize, resize), centre-crop ``crop``, then split
    the crop into grid x grid cells (the model's attribute-map cells).
    """
    m = _t(masks)
    lead = m.shape[:-2]
    x = m.reshape(-1, 1, *m.shape[-2:])
    if x.shape[-2:] != (resize, resize):
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
    top = (resize - crop) // 2  # as the evaluation transform
    x = x[..., top : top + crop, top : top + crop]
    return F.adaptive_avg_pool2d(x, grid).reshape(*lead, grid, grid)


def resample_maps(maps: Any, grid: int) -> torch.Tensor:
    """(..., a, a) maps -> (..., grid, grid): area average when a is a multiple of grid, else
    bilinear (antialiased) interpolation."""
    x = _t(maps)
    lead, a = x.shape[:-2], x.shape[-2:]
    if tuple(a) == (grid, grid):
        return x
    flat = x.reshape(-1, 1, *a)
    if a[0] % grid == 0 and a[1] % grid == 0:
        out = F.adaptive_avg_pool2d(flat, grid)
    else:
        out = F.interpolate(flat, size=(grid, grid), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, grid, grid)


# --- planted quantities -------------------------------------------------------------------------


def planted_contributions(templates: Any, pooled: Any) -> torch.Tensor:
    """<T_i, pool(M_i)>: templates (K, m, m), pooled masks (N, K, m, m) -> (N, K)."""
    return torch.einsum("kij,nkij->nk", _t(templates), _t(pooled))


def planted_total_maps(templates: Any, pooled: Any) -> torch.Tensor:
    """sum_i T_i * pool(M_i): (K, m, m), (N, K, m, m) -> (N, m, m)."""
    return (_t(templates)[None] * _t(pooled)).sum(1)


# --- recovery metrics ---------------------------------------------------------------------------


@dataclass
class Recovery:
    """A mean over items plus the per-item values (attribute name -> value) and what was skipped."""

    value: float
    per_item: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        clean = lambda v: None if v is None or math.isnan(v) else float(v)  # noqa: E731
        return {"value": clean(self.value), "per_attribute": {k: clean(v) for k, v in self.per_item.items()},
                "skipped": list(self.skipped)}


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def contribution_r(
    predicted: Any,
    planted: Any,
    present: Any,
    names: Sequence[str],
    *,
    min_share: float = MIN_PRESENCE_SHARE,
) -> Recovery:
    """Mean Pearson r over attributes (present in >= ``min_share`` of the N images) between the
    model's contributions (N, K) and the planted ones (N, K). Scale-free, so a spatially constant
    template is handled. An attribute whose r is undefined (constant model output) counts as 0."""
    c, p, pr = _t(predicted).numpy(), _t(planted).numpy(), _t(present).numpy() > 0.5
    if not (c.shape == p.shape == pr.shape) or c.ndim != 2 or c.shape[1] != len(names):
        raise ValueError(f"need (N, K) arrays for K={len(names)} names, got {c.shape}, {p.shape}, {pr.shape}")
    per: dict[str, float] = {}
    skipped: list[str] = []
    for k, name in enumerate(names):
        if pr[:, k].mean() < min_share or np.ptp(p[:, k]) == 0:
            skipped.append(name)
            continue
        r = pearson_r(c[:, k], p[:, k])
        per[name] = 0.0 if math.isnan(r) else r
    return Recovery(_mean(list(per.values())), per, skipped)


def contribution_r_per_attribute(
    predicted: Any, planted: Any, present: Any, names: Sequence[str], *, min_images: int = MIN_PRESENT_IMAGES
) -> Recovery:
    """:func:`contribution_r` for every attribute present in >= ``min_images`` of the N images (the
    per-attribute diagnostic: a rare attribute below the headline's 5 % share still gets its r when
    the test set shows it often enough)."""
    n = int(np.asarray(_t(present).shape[0]))
    return contribution_r(predicted, planted, present, names, min_share=min_images / max(n, 1))


def map_coverage_r(
    map_mass: Any, coverage: Any, present: Any, names: Sequence[str], *, min_images: int = MIN_PRESENT_IMAGES
) -> Recovery:
    """Per attribute, Pearson r across the N images between the mass of the model's map (N, K) and
    the attribute's true coverage (N, K), both summed over the model grid's valid cells: does f's
    map grow with how much of the attribute an image shows? g reads an attribute's effect from that
    mass, so an attribute with a low r here cannot get its effect right whatever g does (f's gap,
    not g's). Attributes present in >= ``min_images`` images; a constant map counts as 0."""
    return contribution_r_per_attribute(map_mass, coverage, present, names, min_images=min_images)


def _varies(t: np.ndarray, rel_tol: float) -> bool:
    return bool(np.ptp(t) > rel_tol * max(float(np.abs(t).max()), 1e-12))


def template_r(
    learned: Any,
    planted: Any,
    names: Sequence[str],
    *,
    valid: Any | None = None,
    cells: Any | None = None,
    rel_tol: float = 1e-3,
) -> Recovery:
    """Mean Pearson r between learned (K, a, a) and planted (K, m, m) templates on the truth grid,
    over attributes whose planted template varies in space (peak-to-peak > ``rel_tol`` x max|T_i|).

    ``valid`` (a, a): the model's border mask; only cells whose resampled validity is > 0.5 count.
    ``cells`` (K, m, m) bool, optional: per attribute, only these truth-grid cells count (e.g. the
    cells where the attribute is ever seen: elsewhere no data constrains the template).
    """
    T = _t(planted)
    m = T.shape[-1]
    E = resample_maps(learned, m).numpy()
    keep = _valid_cells(valid, m)
    per_cells = None if cells is None else np.asarray(_t(cells).numpy(), dtype=bool)
    if per_cells is not None and per_cells.shape != tuple(T.shape):
        raise ValueError(f"cells must be (K, m, m) = {tuple(T.shape)}, got {per_cells.shape}")
    per: dict[str, float] = {}
    skipped: list[str] = []
    for k, name in enumerate(names):
        sel = keep if per_cells is None else keep & per_cells[k]
        t = T[k].numpy()[sel]
        if t.size < 2 or not _varies(t, rel_tol):
            skipped.append(name)
            continue
        r = pearson_r(E[k][sel], t)
        per[name] = 0.0 if math.isnan(r) else r
    return Recovery(_mean(list(per.values())), per, skipped)


def _valid_cells(valid: Any | None, m: int) -> np.ndarray:
    if valid is None:
        return np.ones((m, m), dtype=bool)
    return resample_maps(valid, m).numpy() > 0.5


def effect_sign_agreement(
    predicted: Any, planted: Any, present: Any, names: Sequence[str], *, rel_tol: float = 1e-6
) -> Recovery:
    """Share of attributes whose mean effect on the score has the planted sign.

    The mean effect of attribute i is its mean contribution over the images where it is present:
    the model's c_i (N, K) against the planted <T_i, pool(M_i)> (N, K). Attributes with no present
    image or a planted mean effect of 0 (zero templates) are skipped. Only values of a template
    where the attribute occurs are identifiable from data, so the effect (not the template mean
    over all cells) is compared. Per attribute: 1.0 (agrees) or 0.0."""
    c, p, pr = _t(predicted).numpy(), _t(planted).numpy(), _t(present).numpy() > 0.5
    if not (c.shape == p.shape == pr.shape) or c.ndim != 2 or c.shape[1] != len(names):
        raise ValueError(f"need (N, K) arrays for K={len(names)} names, got {c.shape}, {p.shape}, {pr.shape}")
    scale = max(float(np.abs(p).max()), 1e-12)
    per: dict[str, float] = {}
    skipped: list[str] = []
    for k, name in enumerate(names):
        rows = pr[:, k]
        want = float(p[rows, k].mean()) if rows.any() else 0.0
        if abs(want) <= rel_tol * scale:
            skipped.append(name)
            continue
        per[name] = float(np.sign(c[rows, k].mean()) == np.sign(want))
    return Recovery(_mean(list(per.values())), per, skipped)


def mass_in_mask(maps: Any, fractions: Any, present: Any) -> np.ndarray:
    """Per (image, present attribute) share of the map's mass inside the true mask.

    maps (N, K, a, a) >= 0; fractions (N, K, a, a) the mask's coverage of each model cell (see
    :func:`masks_on_model_grid`); present (N, K) bool. Spreading each cell's mass evenly over its
    pixels, the in-mask mass is sum(A * fraction). Returns a 1-D array over the pairs that are
    present and visible to the model (some coverage in ``fractions``; a mask cut away by the
    centre crop is not); a pair whose map is empty (all zero) scores 0: a model that fires on
    nothing gets no credit.
    """
    A, fr, pr = _t(maps), _t(fractions), _t(present) > 0.5
    if A.shape != fr.shape or A.shape[:2] != pr.shape:
        raise ValueError(f"maps {tuple(A.shape)}, fractions {tuple(fr.shape)}, present {tuple(pr.shape)} disagree")
    mass = A.sum((-2, -1)).double()  # (N, K)
    inside = (A * fr).sum((-2, -1)).double()  # (N, K)
    pairs = pr & (fr.sum((-2, -1)) > 0)
    share = torch.where(mass > 0, inside / torch.where(mass > 0, mass, 1.0), torch.zeros_like(mass))
    return share[pairs].numpy().astype(np.float64)


def constant_maps(maps: Any, grid: int, *, valid: Any | None = None) -> np.ndarray:
    """(N,) bool: which maps (N, a, a), resampled to the truth grid (valid cells only, see
    :func:`template_r`), are constant (no spatial information at all)."""
    Q = resample_maps(maps, grid)
    keep = torch.as_tensor(_valid_cells(valid, grid))
    flat = Q[:, keep]  # (N, cells)
    if flat.shape[1] == 0:
        return np.ones(Q.shape[0], dtype=bool)
    return ((flat.max(1).values - flat.min(1).values) == 0).numpy()


def total_map_r(predicted: Any, planted: Any, *, valid: Any | None = None) -> np.ndarray:
    """Per-image Pearson r between predicted total maps (N, a, a) (resampled to the truth grid) and
    planted ones (N, m, m). The same rule for every model: an image whose *predicted* map is
    constant scores r = 0 (it locates nothing); one whose *planted* map is constant is NaN (no
    model can be judged on it; callers leave it out for all models). ``valid``: see
    :func:`template_r`."""
    P = _t(planted)
    m = P.shape[-1]
    Q = resample_maps(predicted, m)
    if Q.shape != P.shape:
        raise ValueError(f"predicted maps {tuple(Q.shape)} and planted maps {tuple(P.shape)} disagree")
    keep = torch.as_tensor(_valid_cells(valid, m))
    out = np.empty(P.shape[0])
    for n in range(P.shape[0]):
        q, p = Q[n][keep].numpy(), P[n][keep].numpy()
        r = pearson_r(q, p)
        out[n] = 0.0 if math.isnan(r) and q.size >= 2 and np.ptp(p) > 0 else r
    return out


def observed_cells(pooled: Any, *, share: float = OBSERVED_CELL_SHARE) -> np.ndarray:
    """(K, m, m) bool: the truth-grid cells where each attribute is observed, i.e. its mean
    coverage over the N images of ``pooled`` (N, K, m, m) (see :func:`pool_masks`) exceeds
    ``share``. Elsewhere no score constrains a template, so :func:`template_r` uses these cells."""
    x = _t(pooled)
    if x.ndim != 4:
        raise ValueError(f"pooled masks must be (N, K, m, m), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        return np.zeros(tuple(x.shape[1:]), dtype=bool)
    return (x.mean(0) > share).numpy()


# --- explanation checks (per image) ---------------------------------------------------------


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman (average ranks for ties) of two (N, D) arrays; NaN where a row of either
    side is constant."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def correctness(attributions: Any, effects: Any, present: Any) -> np.ndarray:
    """Per-image correctness in the FunnyBirds sense (Hesse et al., ICCV 2023): 0.5 * rho + 0.5.

    attributions, effects (N, K): an explanation's attribution of each attribute and its true
    effect (score of the image minus score of the image re-rendered without it); present (N, K)
    bool. rho is the Spearman rank correlation (average ranks for ties), within image n, over its
    present attributes. Returns (N,) in [0, 1]: NaN for an image with fewer than 2 present
    attributes or whose effects are all equal (nothing to rank); an attribution constant over
    the image's attributes ranks nothing and scores 0.5 (rho = 0), like a random one on average.
    """
    a, e, pr = _np(attributions), _np(effects), _np(present) > 0.5
    if not (a.shape == e.shape == pr.shape) or a.ndim != 2:
        raise ValueError(f"need (N, K) attributions, effects and present, got {a.shape}, {e.shape}, {pr.shape}")
    out = np.full(a.shape[0], np.nan)
    for n in range(a.shape[0]):
        k = pr[n]
        if k.sum() < 2 or np.ptp(e[n, k]) == 0:
            continue
        rho = _spearman_rows(a[n, k][None], e[n, k][None])[0]
        out[n] = 0.5 * (0.0 if math.isnan(rho) else rho) + 0.5
    return out


def map_spearman(a: Any, b: Any) -> np.ndarray:
    """Per-image Spearman rank correlation between two models' maps (N, ...) of the same images,
    flattened per image (average ranks for ties). NaN where either map is constant. (N,)."""
    x, y = _np(a), _np(b)
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"need two (N, ...) map arrays of one shape, got {x.shape} and {y.shape}")
    return _spearman_rows(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1))


def bootstrap_ci(
    values: Any | tuple[Any, ...],
    *,
    stat: Callable[..., Any] = np.nanmean,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` over the first axis (the images).

    ``values``: one (N, ...) array, or a tuple of arrays sharing N, resampled together (the same
    rows) and passed to ``stat`` as separate arguments, e.g. ``(pred, target)`` with an RMSE.
    Returns (lo, hi), the (1 - level) / 2 and (1 + level) / 2 quantiles of ``n_boot`` resampled
    statistics (NaN statistics are ignored; (NaN, NaN) when all are NaN).
    """
    arrays = tuple(_np(v) for v in values) if isinstance(values, tuple) else (_np(values),)
    if not arrays or any(a.ndim == 0 for a in arrays):
        raise ValueError("bootstrap_ci needs arrays with a first (sample) axis")
    n = arrays[0].shape[0]
    if n == 0 or any(a.shape[0] != n for a in arrays):
        raise ValueError(f"arrays must share a non-empty first axis, got {[a.shape for a in arrays]}")
    if not (isinstance(n_boot, int) and n_boot >= 1) or not (0 < level < 1):
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got n_boot={n_boot!r}, level={level!r}")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample -> a NaN statistic
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            stats[b] = float(stat(*(a[idx] for a in arrays)))
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return math.nan, math.nan
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# --- reading truth/ -----------------------------------------------------------------------------


#: The datasets of ``truth/masks/`` (the ``dataset`` column of ``IDS_FILE``).
MASK_DATASETS: tuple[str, str] = ("sun", "son")


@dataclass
class PlantedTruth:
    """What ``siam synth`` planted (``DIR/truth``): templates (K, m, m), names, bias, noise floor.

    ``ids``: for the truth of a CSV folder (``truth/csv_ids.csv``), CSV path -> (dataset, key) of
    the image's masks (``masks/<dataset>/<key>.npz``); images are then named by their CSV path,
    and a path without a row is an error. None: images are named by their key (the synth layout).
    """

    root: Path
    attributes: tuple[str, ...]
    templates: np.ndarray
    bias: float
    noise_floor_rmse: dict[str, float]
    meta: dict[str, Any]
    ids: dict[str, tuple[str, str]] | None = None

    @property
    def grid(self) -> int:
        return int(self.templates.shape[-1])

    def key(self, source: str, ident: str) -> str:
        """The masks' key of image ``ident`` asked for as ``source`` (``"son"``/``"sun"``): ``ident``
        itself, or through ``ids`` (:class:`DatasetError` for a path without a row, or one whose
        masks belong to the other dataset)."""
        if self.ids is None:
            return str(ident)
        hit = self.ids.get(str(ident))
        if hit is None:
            raise DatasetError(f"planted truth: image {str(ident)!r} has no row in {self.root / IDS_FILE} "
                               f"({len(self.ids)} rows); every image of the CSV folder needs one "
                               "(rewrite the folder with 'siam data to-csv')")
        if hit[0] != source:
            raise DatasetError(f"planted truth: image {str(ident)!r} is used as a {source} image but "
                               f"{self.root / IDS_FILE} maps it to {hit[0]} masks ({hit[0]}/{hit[1]}.npz)")
        return hit[1]

    def check_ids(self, source: str, idents: Sequence[str]) -> None:
        """Resolve every one of ``idents`` now (:meth:`key`), so a gap fails before any work."""
        for ident in idents:
            self.key(source, ident)

    def masks(self, source: str, ident: str) -> np.ndarray:
        """(K, H, W) bool true masks of one image (``source``: ``"son"`` or ``"sun"``)."""
        key = self.key(source, ident)
        p = self.root / "masks" / source / f"{key}.npz"
        if not p.is_file():
            raise DatasetError(f"no planted masks for {source} image {ident!r}: {p} is missing")
        with np.load(p, allow_pickle=False) as z:
            if "masks" not in z:
                raise DatasetError(f"{p}: expected key 'masks', found {sorted(z.files)}")
            m = np.asarray(z["masks"]).astype(bool)
        if m.ndim != 3 or m.shape[0] != len(self.attributes):
            raise DatasetError(f"{p}: masks must be (K={len(self.attributes)}, H, W), got {m.shape}")
        return m


def read_ids(path: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """``csv_ids.csv`` (``path,dataset,key``; dataset ``sun`` or ``son``) -> {path: (dataset, key)};
    errors name the file, the line and what is allowed."""
    p = Path(path)
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows or tuple(c.strip() for c in rows[0]) != IDS_HEADER:
        got = rows[0] if rows else "an empty file"
        raise DatasetError(f"{p}, line 1: expected the header {','.join(IDS_HEADER)}, got {got!r}")
    out: dict[str, tuple[str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 3 or not row[0] or not row[2]:
            raise DatasetError(f"{p}, line {line}: expected 3 non-empty cells {','.join(IDS_HEADER)}, got {row!r}")
        if row[1] not in MASK_DATASETS:
            raise DatasetError(f"{p}, line {line}, column dataset: got {row[1]!r}; allowed: {list(MASK_DATASETS)}")
        if row[0] in out:
            raise DatasetError(f"{p}, line {line}: path {row[0]!r} appears twice")
        out[row[0]] = (row[1], row[2])
    return out


def load_csv_truth(root: str | os.PathLike[str], truth: str | os.PathLike[str] | None = None) -> PlantedTruth | None:
    """The planted truth of the CSV folder ``root`` (``truth`` or ``root/truth``, as ``siam data
    to-csv`` writes it), or None when the folder carries none. A truth folder without its
    ``csv_ids.csv`` is an error (CSV paths cannot be matched to masks)."""
    t = Path(truth) if truth is not None else Path(root) / "truth"
    if truth is None and not t.exists():
        return None
    if not (t / IDS_FILE).is_file():
        raise DatasetError(f"{t} has no {IDS_FILE}: the planted truth of a CSV folder maps each CSV path to its "
                           f"masks there ({','.join(IDS_HEADER)}); 'siam data to-csv' of a 'siam synth' folder writes it")
    return load_truth(t)


def load_truth(root: str | os.PathLike[str]) -> PlantedTruth:
    """Read ``truth/meta.json`` and ``truth/templates.npy`` (and ``csv_ids.csv`` when present: the
    truth of a CSV folder, see :class:`PlantedTruth`); clear errors for missing/bad files."""
    r = Path(root)
    meta_p, tmpl_p = r / "meta.json", r / "templates.npy"
    for p in (meta_p, tmpl_p):
        if not p.is_file():
            raise DatasetError(f"planted truth incomplete: {p} is missing (expected the 'siam synth' truth/ layout)")
    try:
        meta = json.loads(meta_p.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_p}: not valid JSON ({exc})") from None
    templates = np.load(tmpl_p, allow_pickle=False).astype(np.float64)
    names = tuple(meta.get("attributes") or ())
    if templates.ndim != 3 or templates.shape[0] != len(names) or templates.shape[1] != templates.shape[2]:
        raise DatasetError(f"{tmpl_p}: templates must be (K={len(names)}, m, m), got {templates.shape}")
    floor = meta.get("noise_floor_rmse") or {}
    if not isinstance(floor, dict):
        raise DatasetError(f"{meta_p}: noise_floor_rmse must map split -> RMSE, got {floor!r}")
    ids_p = r / IDS_FILE
    return PlantedTruth(
        root=r, attributes=names, templates=templates, bias=float(meta.get("bias", 0.0)),
        noise_floor_rmse={k: float(v) for k, v in floor.items()}, meta=meta,
        ids=read_ids(ids_p) if ids_p.is_file() else None,
    )
