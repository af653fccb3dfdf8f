"""Per-image what-where-how explanations, read straight off SIAM's forward pass.

:func:`explain` runs the model once on one image and keeps every quantity of
:class:`~siam.models.siam.SIAMOutput` (paper Sec. 3): attribute maps A_i (*what*, *where*),
presence, signed contributions c_i = <E_i, A_i> (*how much*) and contribution maps E_i * A_i.
No hooks, no gradients, no approximation: ``score == bias + sum(contributions)`` up to float32
rounding.

Several targets (``model.targets``, e.g. beauty and safety): one forward pass gives every target's
score_t = b_t + sum_i <E_t,i, A_i> over the same attribute maps. An :class:`Explanation` shows one
target (``target``) in its one-target fields and keeps every target's numbers (``all_*``);
:meth:`Explanation.for_target` switches. A one-target model's records are exactly as before.

Because g is linear (Sec. 3.2), "what if" questions have exact answers
(:meth:`Explanation.intervene`): removing attribute i subtracts c_i, scaling it multiplies c_i,
and removing it inside a region subtracts the part of its contribution map that lies there.

Geometry. The model sees the image resized to a ``resize x resize`` square (aspect ratio not
kept) and centre-cropped to ``crop x crop`` (:func:`siam.data.transforms.eval_transform`). That
crop is a rectangle of the original image, :attr:`Explanation.crop_box` ``(x0, y0, x1, y1)`` in
original pixels, and the m x m map cells split it evenly: cell (row i, column j) covers
``x0 + j (x1 - x0)/m .. x0 + (j+1)(x1 - x0)/m`` and likewise in y. (A cell's *receptive field* is
larger; the grid is the model's own spatial layout of evidence, which is what the paper draws.)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from siam.checkpoint import checkpoint_file
from siam.data.images import DEFAULT_MAX_MEGAPIXELS, decode_image
from siam.data.transforms import Preprocessing, eval_transform
from siam.models.baseline import Baseline
from siam.models.siam import SIAM, target_index
from siam.provenance import synthetic_note, trained_on

__all__ = [
    "Explanation",
    "Intervention",
    "BaselineResult",
    "explain",
    "explain_baseline",
    "error_record",
    "model_identity",
    "load_explanation",
    "crop_box",
    "region_weights",
    "JSON_KEYS",
    "TARGET_JSON_KEYS",
]

#: Keys every explanation JSON (and every error record) has; stable for downstream consumers.
JSON_KEYS: tuple[str, ...] = (
    "image", "image_size", "score", "bias", "variance", "attributes", "top_positive",
    "top_negative", "maps", "error", "model", "preprocessing", "grid", "crop_box", "top_k", "note",
)
#: Keys added when the model predicts several targets: the shown target's name and every target's
#: ``{name, score, bias, variance, contributions: {attribute: c}, top_positive, top_negative}``.
TARGET_JSON_KEYS: tuple[str, ...] = ("target", "targets")

Box = tuple[float, float, float, float]
ImageInput = Image.Image | str | os.PathLike | bytes | torch.Tensor


def target_slug(name: str) -> str:
    """A file-name-safe form of a target name (figure and data files of several targets)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip(".") or "target"


# --- geometry -----------------------------------------------------------------------------------

def crop_box(width: int, height: int, pre: Preprocessing) -> Box:
    """The part of a ``width x height`` image the model sees, in original pixels.

    The image is resized to ``pre.resize`` square, then centre-cropped to ``pre.crop`` at offset
    ``(resize - crop) // 2`` (as :class:`~siam.data.transforms.EvalTransform` does); mapped back
    through the resize this is ``(x0, y0, x1, y1)``.
    """
    r, c = pre.resize, pre.crop
    offset = (r - c) // 2
    sx, sy = width / r, height / r
    return (offset * sx, offset * sy, (offset + c) * sx, (offset + c) * sy)


def _overlap_1d(edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(m,) fraction of each interval [edges[j], edges[j+1]) inside [lo, hi]."""
    inside = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    return inside / np.diff(edges)


def region_weights(box: Box, grid: int, region: Sequence[float]) -> np.ndarray:
    """(m, m) fraction of each map cell's area inside ``region`` = (x0, y0, x1, y1).

    ``box`` is the crop box (:func:`crop_box`) the m x m cells partition evenly. A cell half inside
    the region gets 0.5 (area weighting), so removing an attribute "inside the region" removes
    exactly that share of each cell's contribution.
    """
    xs = np.linspace(box[0], box[2], grid + 1)
    ys = np.linspace(box[1], box[3], grid + 1)
    wx = _overlap_1d(xs, float(region[0]), float(region[2]))  # (m,) columns
    wy = _overlap_1d(ys, float(region[1]), float(region[3]))  # (m,) rows
    return wy[:, None] * wx[None, :]  # (m, m)


# --- model identity ------------------------------------------------------------------------------

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def model_identity(model: SIAM | Baseline, *, checkpoint: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What produced an explanation: kind, backbone, grid, K, siam version, what it was trained on
    (``trained_on``: synthetic / real / csv / mixed / unknown, :mod:`siam.provenance`) and, when
    ``checkpoint`` is given, its path and sha256. Compute once and pass to :func:`explain`."""
    from siam import __version__

    meta = getattr(model, "meta", None) or {}
    cfg = model.config
    ident: dict[str, Any] = {
        "kind": cfg.kind,
        "backbone": cfg.backbone,
        "grid": cfg.grid,
        "border": cfg.border,
        "presence": cfg.presence,
        "num_attributes": len(cfg.attributes),
        "siam_version": meta.get("siam_version", __version__),
        "trained_on": trained_on(model)["kind"],
    }
    if checkpoint is not None:
        p = checkpoint_file(checkpoint)
        ident["checkpoint"] = str(p)
        ident["checkpoint_sha256"] = _sha256(p)
    return ident


# --- results ------------------------------------------------------------------------------------

def _f(x: Any) -> float:
    return float(x)


@dataclass(frozen=True, eq=False)
class Intervention:
    """The exact effect of a counterfactual edit of the contributions (g is linear, Sec. 3.2).

    ``contributions``: (K,) edited c_i; ``score = original_score + sum(edited - original)``;
    ``changes``: one ``{name, before, after, change}`` per attribute whose contribution changed,
    largest |change| first.
    """

    score: float
    original_score: float
    delta: float
    contributions: np.ndarray
    changes: list[dict[str, Any]]
    attributes: tuple[str, ...] = ()
    request: dict[str, Any] = field(default_factory=dict)
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record; ``target`` (the target edited) only for a model with several targets."""
        return {
            "request": self.request,
            "score": self.score,
            "original_score": self.original_score,
            "delta": self.delta,
            "changes": self.changes,
            "contributions": [
                {"name": n, "contribution": _f(c)} for n, c in zip(self.attributes, self.contributions)
            ],
            **({} if self.target is None else {"target": self.target}),
        }


@dataclass(frozen=True, eq=False)
class BaselineResult:
    """The unconstrained baseline on one image (Sec. 4.2): score, its intercept b, and the CAM
    (h, w) over ``crop_box`` with ``score == cam.mean()``."""

    score: float
    bias: float
    cam: np.ndarray
    crop_box: Box
    model_id: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "bias": self.bias, "cam_shape": list(self.cam.shape),
                "crop_box": list(self.crop_box), "model": self.model_id}


@dataclass(frozen=True, eq=False)
class Explanation:
    """What the model saw in one image, where, and how much it mattered (paper Sec. 3).

    presence, contributions: (K,); maps, contribution_maps: (K, m, m) with
    ``contribution_maps.sum((1, 2)) == contributions`` and ``score == bias + contributions.sum()``.
    ``crop_box``: the rectangle of the original image the m x m cells partition (module docstring).
    ``note``: a caveat shown with the explanation, e.g. that a model trained on synthetic scenes
    explains a photograph (:func:`siam.provenance.synthetic_note`); None when there is none.

    Several targets: ``targets`` (T,) names, ``target`` the one shown in ``score``, ``bias``,
    ``contributions``, ``contribution_maps`` and ``variance``; ``all_scores``/``all_biases`` (T,),
    ``all_contributions`` (T, K), ``all_contribution_maps`` (T, K, m, m), ``all_variances`` (T,) or
    None hold every target (None for a one-target explanation). :meth:`for_target` shows another.
    """

    image: str | None
    image_size: tuple[int, int]
    score: float
    bias: float
    attributes: tuple[str, ...]
    presence: np.ndarray
    contributions: np.ndarray
    maps: np.ndarray
    contribution_maps: np.ndarray
    model_id: dict[str, Any]
    preprocessing: dict[str, Any]
    crop_box: Box = (0.0, 0.0, 0.0, 0.0)
    variance: float | None = None
    top_k: int = 5
    note: str | None = None
    targets: tuple[str, ...] = ("score",)
    target: str = "score"
    all_scores: np.ndarray | None = None
    all_biases: np.ndarray | None = None
    all_contributions: np.ndarray | None = None
    all_contribution_maps: np.ndarray | None = None
    all_variances: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = len(self.attributes)
        t = len(self.targets)
        if self.target not in self.targets:
            raise ValueError(f"target {self.target!r} is not one of the targets {list(self.targets)}")
        per_target = (self.all_scores, self.all_biases, self.all_contributions, self.all_contribution_maps)
        if t > 1 and any(a is None for a in per_target):
            raise ValueError(f"an explanation of {t} targets needs all_scores, all_biases, all_contributions "
                             "and all_contribution_maps")
        if t > 1 and (np.shape(self.all_scores) != (t,) or np.shape(self.all_biases) != (t,)
                      or np.shape(self.all_contributions) != (t, k)
                      or np.shape(self.all_contribution_maps) != (t, *self.maps.shape)):
            raise ValueError(
                f"per-target arrays must be all_scores/all_biases (T={t},), all_contributions (T, K={k}) and "
                f"all_contribution_maps (T, K, m, m); got {np.shape(self.all_scores)}, {np.shape(self.all_biases)}, "
                f"{np.shape(self.all_contributions)}, {np.shape(self.all_contribution_maps)}")
        if self.presence.shape != (k,) or self.contributions.shape != (k,):
            raise ValueError(
                f"presence/contributions must have shape ({k},), got {self.presence.shape}, "
                f"{self.contributions.shape}"
            )
        if self.maps.ndim != 3 or self.maps.shape[0] != k or self.contribution_maps.shape != self.maps.shape:
            raise ValueError(
                f"maps and contribution_maps must both be (K={k}, m, m), got {self.maps.shape}, "
                f"{self.contribution_maps.shape}"
            )

    @property
    def grid(self) -> int:
        """m, the side of the attribute maps."""
        return int(self.maps.shape[-1])

    @property
    def several_targets(self) -> bool:
        """Whether the model predicts more than one target (the records then carry them all)."""
        return len(self.targets) > 1

    def for_target(self, target: int | str) -> Explanation:
        """The same explanation showing target ``target`` (a name or an index) in the one-target
        fields; ``ValueError`` naming the targets otherwise."""
        t = target_index(self.targets, target)
        if not self.several_targets:
            return self
        variances = self.all_variances
        return replace(
            self, target=self.targets[t], score=float(self.all_scores[t]), bias=float(self.all_biases[t]),
            contributions=self.all_contributions[t], contribution_maps=self.all_contribution_maps[t],
            variance=None if variances is None else float(variances[t]),
        )

    def per_target(self) -> list[Explanation]:
        """One view per target, in the model's order."""
        return [self.for_target(t) for t in range(len(self.targets))]

    def ranks(self) -> np.ndarray:
        """(K,) int ranks by |contribution|: 1 = largest; ties keep attribute order."""
        order = np.argsort(-np.abs(self.contributions), kind="stable")
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(1, len(order) + 1)
        return ranks

    def _entries(self, idx: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        return [
            {"name": self.attributes[i], "contribution": _f(self.contributions[i]), "presence": _f(self.presence[i])}
            for i in idx
        ]

    def top_positive(self, k: int | None = None) -> list[dict[str, Any]]:
        """Up to k attributes with c_i > 0, largest first: ``{name, contribution, presence}``."""
        k = self.top_k if k is None else _check_k(k)
        order = np.argsort(-self.contributions, kind="stable")
        return self._entries([i for i in order if self.contributions[i] > 0][:k])

    def top_negative(self, k: int | None = None) -> list[dict[str, Any]]:
        """Up to k attributes with c_i < 0, most negative first."""
        k = self.top_k if k is None else _check_k(k)
        order = np.argsort(self.contributions, kind="stable")
        return self._entries([i for i in order if self.contributions[i] < 0][:k])

    def total_map(self) -> np.ndarray:
        """(m, m) sum_i E_i * A_i; sums to ``score - bias``."""
        return self.contribution_maps.sum(0)

    def index(self, name: str) -> int:
        """Position of attribute ``name``; ``ValueError`` listing the allowed names otherwise."""
        _check_names([name], self.attributes)
        return self.attributes.index(name)

    def to_json(self, *, maps_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """JSON-serialisable record with the stable keys :data:`JSON_KEYS`."""
        ranks = self.ranks()
        return {
            "image": self.image,
            "image_size": list(self.image_size),
            "score": self.score,
            "bias": self.bias,
            "variance": self.variance,
            "attributes": [
                {"name": n, "presence": _f(p), "contribution": _f(c), "rank": int(r)}
                for n, p, c, r in zip(self.attributes, self.presence, self.contributions, ranks)
            ],
            "top_positive": self.top_positive(),
            "top_negative": self.top_negative(),
            "maps": None if maps_path is None else str(maps_path),
            "error": None,
            "model": self.model_id,
            "preprocessing": self.preprocessing,
            "grid": self.grid,
            "crop_box": list(self.crop_box),
            "top_k": self.top_k,
            "note": self.note,
            **self._targets_json(),
        }

    def _targets_json(self) -> dict[str, Any]:
        """The :data:`TARGET_JSON_KEYS` (several targets only; a one-target record is unchanged)."""
        if not self.several_targets:
            return {}
        return {
            "target": self.target,
            "targets": [
                {"name": v.target, "score": v.score, "bias": v.bias, "variance": v.variance,
                 "contributions": {n: _f(c) for n, c in zip(v.attributes, v.contributions)},
                 "top_positive": v.top_positive(), "top_negative": v.top_negative()}
                for v in self.per_target()
            ],
        }

    def save_npz(self, path: str | os.PathLike[str], *, extra: Mapping[str, np.ndarray] | None = None) -> Path:
        """Write maps (K, m, m), contribution_maps (K, m, m), total_map (m, m), attributes, presence,
        contributions, score, bias, crop_box, image_size (plus ``extra`` arrays, e.g. a baseline
        CAM) to a compressed NPZ that loads without pickles. Several targets add ``targets`` (T,),
        ``target``, ``scores``/``biases`` (T,), ``all_contributions`` (T, K) and
        ``all_contribution_maps`` (T, K, m, m) (and ``variances`` (T,) when predicted)."""
        arrays = self._arrays()
        clash = sorted(set(arrays) & set(extra or {}))
        if clash:
            raise ValueError(f"extra arrays may not replace the explanation's own: {clash}")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(p, **arrays, **{k: np.asarray(v) for k, v in (extra or {}).items()})
        return p

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "attributes": np.asarray(self.attributes, dtype=str),
            "maps": self.maps,
            "contribution_maps": self.contribution_maps,
            "total_map": self.total_map(),
            "presence": self.presence,
            "contributions": self.contributions,
            "score": np.float64(self.score),
            "bias": np.float64(self.bias),
            "crop_box": np.asarray(self.crop_box, dtype=np.float64),
            "image_size": np.asarray(self.image_size, dtype=np.int64),
            **self._target_arrays(),
        }

    def _target_arrays(self) -> dict[str, np.ndarray]:
        if not self.several_targets:
            return {}
        out = {
            "targets": np.asarray(self.targets, dtype=str),
            "target": np.asarray(self.target, dtype=str),
            "scores": np.asarray(self.all_scores, dtype=np.float64),
            "biases": np.asarray(self.all_biases, dtype=np.float64),
            "all_contributions": np.asarray(self.all_contributions),
            "all_contribution_maps": np.asarray(self.all_contribution_maps),
        }
        if self.all_variances is not None:
            out["variances"] = np.asarray(self.all_variances, dtype=np.float64)
        return out

    def intervene(
        self,
        *,
        remove: Sequence[str] = (),
        scale: Mapping[str, float] | None = None,
        remove_region: Mapping[str, Sequence[float]] | None = None,
        top_k: int | None = None,
    ) -> Intervention:
        """Exact counterfactual score under edits of the contributions (g is linear).

        Applied in this order: ``remove_region`` (name -> (x0, y0, x1, y1) in original image
        pixels; each cell of that attribute's contribution map loses the fraction of its area
        inside the region, :func:`region_weights`), ``scale`` (c_i *= factor), ``remove``
        (c_i = 0), then ``top_k`` (keep only the k largest |c_i| of the result, zero the rest).
        The edits apply to the shown target (:attr:`target`; :meth:`for_target` for another).
        """
        scale = dict(scale or {})
        remove_region = dict(remove_region or {})
        if isinstance(remove, str):
            remove = [remove]
        _check_names([*remove, *scale, *remove_region], self.attributes)
        before = self.contributions.astype(np.float64)
        after = before.copy()
        regions: dict[str, list[float]] = {}
        for name, region in remove_region.items():
            box = _check_region(name, region, self.image_size)
            i = self.attributes.index(name)
            w = region_weights(self.crop_box, self.grid, box)  # (m, m)
            after[i] -= float((w * self.contribution_maps[i].astype(np.float64)).sum())
            regions[name] = list(box)
        for name, factor in scale.items():
            f = float(factor)
            if not math.isfinite(f):
                raise ValueError(f"scale factor for {name!r} must be a finite number, got {factor!r}")
            after[self.attributes.index(name)] *= f
        for name in remove:
            after[self.attributes.index(name)] = 0.0
        if top_k is not None:
            k = _check_k(top_k)
            order = np.argsort(-np.abs(after), kind="stable")
            after[order[k:]] = 0.0
        diff = after - before
        score = self.score + float(diff.sum())
        changed = [i for i in np.argsort(-np.abs(diff), kind="stable") if diff[i] != 0.0]
        changes = [
            {"name": self.attributes[i], "before": _f(before[i]), "after": _f(after[i]), "change": _f(diff[i])}
            for i in changed
        ]
        request = {"remove": list(remove), "scale": {k: float(v) for k, v in scale.items()},
                   "remove_region": regions, "top_k": top_k}
        return Intervention(
            score=score, original_score=self.score, delta=score - self.score, contributions=after,
            changes=changes, attributes=self.attributes, request=request,
            target=self.target if self.several_targets else None,
        )


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return int(k)


def _check_names(names: Sequence[str], allowed: Sequence[str]) -> None:
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; allowed: {list(allowed)}")


def _check_region(name: str, region: Sequence[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(
            f"region for {name!r} must be 4 numbers x0,y0,x1,y1 (original image pixels), got {region!r}"
        ) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x0 >= x1 or y0 >= y1:
        raise ValueError(f"region for {name!r} must have finite x0 < x1 and y0 < y1, got {region!r}")
    w, h = size
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"region for {name!r} {region!r} lies outside the {w}x{h} image")
    return (x0, y0, x1, y1)


# --- computing explanations ----------------------------------------------------------------------

def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _prepare(
    image: ImageInput, pre: Preprocessing, *, max_megapixels: float, name: str | None
) -> tuple[torch.Tensor, str | None, tuple[int, int], Box]:
    """-> (input (1, 3, crop, crop), name, original (width, height), crop box)."""
    if isinstance(image, torch.Tensor):
        x = image[None] if image.ndim == 3 else image
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(
                "a tensor image must be one preprocessed float image (3, H, W) or (1, 3, H, W), got "
                f"shape {tuple(image.shape)} dtype {image.dtype}; pass a PIL image or a path to "
                "have the model's preprocessing applied"
            )
        h, w = int(x.shape[-2]), int(x.shape[-1])
        return x, name, (w, h), (0.0, 0.0, float(w), float(h))
    if isinstance(image, Image.Image):
        pil = image if image.mode == "RGB" else image.convert("RGB")
    elif isinstance(image, (bytes, bytearray, memoryview)):
        pil = decode_image(bytes(image), name=name or "<bytes>", max_megapixels=max_megapixels)
    elif isinstance(image, (str, os.PathLike)):
        name = name if name is not None else str(image)
        pil = decode_image(Path(image), name=name, max_megapixels=max_megapixels)
    else:
        raise ValueError(
            f"image must be a PIL image, a path, bytes or a float tensor, got {type(image).__name__}"
        )
    x = eval_transform(pre)(pil)[None]  # (1, 3, crop, crop)
    return x, name, pil.size, crop_box(*pil.size, pre)


@torch.no_grad()
def _forward(model: torch.nn.Module, x: torch.Tensor) -> Any:
    was_training = model.training
    model.eval()
    try:
        return model(x.to(_device(model)))
    finally:
        model.train(was_training)


def explain(
    model: SIAM,
    image: ImageInput,
    *,
    top_k: int = 5,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    name: str | None = None,
    model_id: dict[str, Any] | None = None,
    source: str | os.PathLike[str] | None = None,
    target: int | str = 0,
) -> Explanation:
    """Explain ``model``'s score for one image from its own forward pass (eval mode, no grad).

    ``image``: a path or encoded bytes (decoded safely by :func:`siam.data.images.decode_image`:
    JPEG/PNG/WebP, EXIF-rotated, transparency on white), a PIL image (used as is, ``convert("RGB")``
    if needed), or one already preprocessed float tensor (3, H, W) whose pixels are then the
    coordinate frame. ``top_k`` sets how many attributes ``top_positive``/``top_negative`` list in
    the JSON. ``model_id`` (from :func:`model_identity`, e.g. with the checkpoint hash) defaults to
    the model's own description. ``source``: the image's file (default: ``image`` when it is a
    path); a model trained on synthetic scenes gets a ``note`` on any image that is not from a
    ``siam synth`` world, or whose origin is unknown. ``target`` (a name or an index; default the
    first) is the target shown; a model with several targets gets all of them in the ``all_*``
    fields (:meth:`Explanation.for_target`). Raises :class:`~siam.errors.ImageDecodeError` for a
    bad image and ``ValueError`` for an unknown target.
    """
    if not isinstance(model, SIAM):
        raise ValueError(
            f"explain needs a SIAM model, got {type(model).__name__}; a baseline has no attribute "
            "explanation (use explain_baseline for its score and CAM)"
        )
    top_k = _check_k(top_k)
    t = target_index(model.targets, target)
    x, label, size, box = _prepare(image, model.preprocessing, max_megapixels=max_megapixels, name=name)
    if source is None and isinstance(image, (str, os.PathLike)):
        source = image
    out = _forward(model, x).for_target(t)
    scores = out.scores[0].detach().cpu().numpy()  # (T,)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{label or 'image'}: the model produced a non-finite score ({scores.tolist()})")
    several = len(out.targets) > 1
    variances = None if out.variances is None else out.variances[0].detach().cpu().numpy()  # (T,)
    return Explanation(
        image=label,
        image_size=(int(size[0]), int(size[1])),
        score=float(out.score[0]),
        bias=float(out.bias.detach()),
        attributes=tuple(model.attributes),
        presence=out.presence[0].cpu().numpy(),  # (K,)
        contributions=out.contributions[0].cpu().numpy(),  # (K,)
        maps=out.maps[0].cpu().numpy(),  # (K, m, m)
        contribution_maps=out.contribution_maps[0].cpu().numpy(),  # (K, m, m)
        model_id=model_id if model_id is not None else model_identity(model),
        preprocessing=model.preprocessing.to_dict(),
        crop_box=box,
        variance=None if out.variance is None else float(out.variance[0]),
        top_k=top_k,
        note=synthetic_note(model, source),
        targets=tuple(out.targets),
        target=out.targets[t],
        all_scores=scores if several else None,
        all_biases=out.biases.detach().cpu().numpy() if several else None,  # (T,)
        all_contributions=out.all_contributions[0].cpu().numpy() if several else None,  # (T, K)
        all_contribution_maps=out.all_contribution_maps[0].cpu().numpy() if several else None,  # (T, K, m, m)
        all_variances=variances if several else None,
    )


def explain_baseline(
    baseline: Baseline,
    image: ImageInput,
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    name: str | None = None,
    model_id: dict[str, Any] | None = None,
) -> BaselineResult:
    """The baseline's score and CAM (h, w) for one image, with its own preprocessing."""
    if not isinstance(baseline, Baseline):
        raise ValueError(f"expected a Baseline model, got {type(baseline).__name__}")
    x, _, _, box = _prepare(image, baseline.preprocessing, max_megapixels=max_megapixels, name=name)
    out = _forward(baseline, x)
    return BaselineResult(
        score=float(out.score[0]),
        bias=float(baseline.regressor.bias[0].detach()),
        cam=out.cam[0].cpu().numpy(),  # (h, w)
        crop_box=box,
        model_id=model_id if model_id is not None else model_identity(baseline),
    )


def error_record(
    image: str | None,
    error: str | BaseException,
    *,
    model: SIAM | None = None,
    model_id: dict[str, Any] | None = None,
    target: int | str | None = None,
) -> dict[str, Any]:
    """The JSON record of a failed image: the keys of :meth:`Explanation.to_json`, ``error`` set
    to the message and every number null (attributes listed with null values when ``model`` is
    given; a model with several targets adds ``target`` and ``targets`` with null numbers)."""
    names = tuple(model.attributes) if model is not None else ()
    if model_id is None and model is not None:
        model_id = model_identity(model)
    targets = tuple(model.targets) if model is not None else ()
    extra: dict[str, Any] = {}
    if len(targets) > 1:
        extra = {"target": targets[0] if target is None else targets[target_index(targets, target)],
                 "targets": [{"name": t, "score": None, "bias": None, "variance": None,
                              "contributions": {n: None for n in names}, "top_positive": [], "top_negative": []}
                             for t in targets]}
    return {
        "image": image,
        "image_size": None,
        "score": None,
        "bias": None,
        "variance": None,
        "attributes": [{"name": n, "presence": None, "contribution": None, "rank": None} for n in names],
        "top_positive": [],
        "top_negative": [],
        "maps": None,
        "error": str(error),
        "model": model_id,
        "preprocessing": model.preprocessing.to_dict() if model is not None else None,
        "grid": None,
        "crop_box": None,
        "top_k": None,
        "note": None,
        **extra,
    }


def load_explanation(json_path: str | os.PathLike[str]) -> Explanation:
    """Rebuild an :class:`Explanation` from a JSON written by ``siam explain`` and its NPZ."""
    p = Path(json_path)
    try:
        record = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: not a readable explanation JSON ({exc})") from exc
    if record.get("error") is not None:
        raise ValueError(f"{p}: is an error record ({record['error']}), not an explanation")
    if not record.get("maps"):
        raise ValueError(f"{p}: has no 'maps' NPZ path")
    npz = Path(record["maps"])
    if not npz.is_absolute():
        npz = p.parent / npz
    if not npz.is_file():  # the folder was moved: look next to the JSON
        npz = p.parent / npz.name
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    several: dict[str, Any] = {}
    if "targets" in arrays:
        several = {
            "targets": tuple(str(t) for t in arrays["targets"]), "target": str(arrays["target"]),
            "all_scores": arrays["scores"], "all_biases": arrays["biases"],
            "all_contributions": arrays["all_contributions"],
            "all_contribution_maps": arrays["all_contribution_maps"], "all_variances": arrays.get("variances"),
        }
    return Explanation(
        image=record["image"],
        image_size=tuple(record["image_size"]),
        score=float(record["score"]),
        bias=float(record["bias"]),
        attributes=tuple(str(a) for a in arrays["attributes"]),
        presence=arrays["presence"],
        contributions=arrays["contributions"],
        maps=arrays["maps"],
        contribution_maps=arrays["contribution_maps"],
        model_id=record.get("model") or {},
        preprocessing=record.get("preprocessing") or {},
        crop_box=tuple(float(v) for v in record["crop_box"]),
        variance=record.get("variance"),
        top_k=int(record.get("top_k", 5)),
        note=record.get("note"),
        **several,
    )
