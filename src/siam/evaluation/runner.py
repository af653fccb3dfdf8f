"""Run a model over held-out data and compute every metric of the report.

:func:`evaluate_model` streams the SoN test images (score -> RMSE, tau; with planted truth also
contributions, maps and total maps against the true masks) and the SUN test images (presence ->
per-attribute AP), batch by batch, so memory stays O(N K) whatever the map size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from siam.data.samples import collate
from siam.evaluation import metrics as M
from siam.evaluation import planted as P
from siam.models.baseline import Baseline
from siam.models.heads import border_mask
from siam.models.siam import SIAM

#: A truth-grid cell counts as 'observed' for an attribute when its mean coverage over the test
#: images exceeds this share (:func:`siam.evaluation.planted.observed_cells`); ``template_r`` is
#: computed on these cells only.
OBSERVED_CELL_SHARE = P.OBSERVED_CELL_SHARE

__all__ = ["OBSERVED_CELL_SHARE", "EvalData", "evaluate_model", "pair_targets", "sun_map_ceiling"]


@dataclass
class EvalData:
    """Held-out data: SoN images with scores, SUN images with labels (names = label columns), and
    optionally the planted truth of a synthetic folder. ``split`` names the noise floor to use
    (``"all"`` for a separate test world evaluated whole). ``targets``: the names of the SoN
    samples' target columns (a CSV folder's targets.csv); None: one unnamed target (the ScenicOrNot
    layout), compared with the model's first target."""

    son: Dataset | None
    sun: Dataset | None
    sun_attributes: Sequence[str] = ()
    truth: P.PlantedTruth | None = None
    split: str = "test"
    targets: Sequence[str] | None = None


def pair_targets(model_targets: Sequence[str], data_targets: Sequence[str] | None) -> list[tuple[int, int]]:
    """(model index, data column) of each target evaluated, in the model's order.

    By name where the model and the data share names; data without names (None) or without a
    shared name are paired by position (the first target is the score: a one-target model written
    before targets were named, ``("score",)``, is compared with the data's first column).
    """
    if data_targets is None:
        return [(0, 0)]
    data = list(data_targets)
    shared = [(i, data.index(n)) for i, n in enumerate(model_targets) if n in data]
    return shared or [(i, i) for i in range(min(len(model_targets), len(data)))]


def _loader(ds: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)


def _index(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    pos = {n: i for i, n in enumerate(names)}
    return [pos[n] for n in wanted]


def _cat(parts: list[torch.Tensor], *, width: int | None = None) -> np.ndarray:
    """Concatenate per-batch tensors to one float64 array ((0,) or (0, width) when empty)."""
    if not parts:
        return np.zeros((0,) if width is None else (0, width))
    return torch.cat(parts).double().numpy()


@torch.no_grad()
def evaluate_model(
    model: SIAM | Baseline,
    data: EvalData,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    return_arrays: bool = False,
) -> dict[str, Any]:
    """All report metrics of ``model`` on ``data`` (keys as in ``report.json``; None = n/a).

    SoN: ``son_rmse``, ``son_tau`` (tau-b), ``son_n`` of the first evaluated target (the model's
    target 0 unless only others are in the data), and ``per_target``: ``{model target name:
    {"son_rmse", "son_tau", "son_n", "data_target"}}`` for every target paired with a data column
    (:func:`pair_targets`; ``data_target`` is the column's name, None for unnamed data). Planted
    truth is compared on the first target. SUN (SIAM only): ``sun_map`` and
    ``sun_ap`` (per attribute, labels >= 0.5 positive, no-positive attributes listed in
    ``sun_excluded``). Planted truth (on the attributes shared by model and truth, in the truth's
    order): ``rmse_over_noise_floor``, ``contribution_r``, ``template_r`` (on the cells where each
    attribute is observed in these images), ``template_sign_agreement``, ``mass_in_mask`` (SIAM;
    a present attribute with an empty map scores 0) and ``total_map_r`` (SIAM: total contribution
    map; baseline: CAM; a constant predicted map scores r = 0, an image whose planted map is
    constant is left out for every model) with ``total_map_constant_share`` (share of the scored
    images whose predicted map is constant); details under ``planted``.

    ``return_arrays``: also ``"arrays"``, per-item numpy arrays for bootstraps: ``son_pred``,
    ``son_target``, ``son_clean`` (planted clean score; None without truth) (N,);
    ``contributions``, ``planted_contributions``, ``present`` (N, K) on ``attributes`` (the shared
    names, truth order; SIAM only); ``mass_pairs`` (P,) the per-(image, present attribute) values
    behind ``mass_in_mask``; ``total_map_r`` (N,); ``sun_presence``, ``sun_labels`` (M, K') on
    ``sun_attributes``. Entries that do not apply are None.
    """
    model.eval()
    is_siam = isinstance(model, SIAM)
    out: dict[str, Any] = {k: None for k in (
        "son_rmse", "son_tau", "son_n", "sun_map", "contribution_r", "template_r",
        "template_sign_agreement", "mass_in_mask", "total_map_r", "total_map_constant_share",
        "rmse_over_noise_floor")}
    arrays: dict[str, Any] = {k: None for k in (
        "son_pred", "son_target", "son_clean", "attributes", "contributions", "planted_contributions",
        "present", "mass_pairs", "total_map_r", "sun_attributes", "sun_presence", "sun_labels")}
    truth = data.truth
    names = tuple(model.attributes)
    shared = [n for n in truth.attributes if n in names] if truth is not None else []  # truth order
    mi = _index(names, shared)  # model columns of the shared attributes
    ti = _index(truth.attributes, shared) if truth is not None else []
    valid = border_mask(model.config.grid, model.config.border) if is_siam else None
    pre = model.preprocessing
    pairs = pair_targets(model.config.targets, data.targets)
    if data.son is not None and len(data.son) and pairs:  # type: ignore[arg-type]
        per_pred: list[list[torch.Tensor]] = [[] for _ in pairs]
        per_true: list[list[torch.Tensor]] = [[] for _ in pairs]
        clean, contrib, planted_c, present, pooled_seen = [], [], [], [], []
        mass, mass_ceiling, total_r, constant, map_mass, coverage = [], [], [], [], [], []
        m0 = pairs[0][0]  # the model target the planted truth and the one-target keys describe
        for b in _loader(data.son, batch_size, num_workers):
            o = model(b.image)
            if b.num_targets < max(d for _, d in pairs) + 1:
                raise ValueError(f"the SoN data has {b.num_targets} target column(s), expected {data.targets}")
            for j, (mi_t, di) in enumerate(pairs):
                rows = b.scores_mask[:, di]  # (B,) the images with a value of this target
                per_pred[j].append(o.scores[rows, mi_t].float())
                per_true[j].append(b.scores[rows, di].float())
            keep = b.scores_mask[:, pairs[0][1]]  # (B,) every per-image array below uses them
            o = o.for_target(m0)
            if truth is None or not bool(keep.any()):
                continue
            ids = [i for i, k in zip(b.ids, keep.tolist()) if k]
            all_masks = torch.as_tensor(np.stack([truth.masks("son", i) for i in ids]))  # (B, K_t, H, W)
            pooled_all = P.pool_masks(all_masks, truth.grid)  # (B, K_t, m, m)
            planted_total = P.planted_total_maps(truth.templates, pooled_all)  # (B, m, m), every attribute
            clean.append(truth.bias + planted_total.double().sum((-2, -1)))
            masks, pooled = all_masks[:, ti], pooled_all[:, ti]  # (B, K', ...) the shared attributes
            T = torch.as_tensor(truth.templates[ti], dtype=torch.float32)  # (K', m, m)
            predicted = o.total_map[keep] if is_siam else o.cam[keep]
            total_r.append(torch.as_tensor(P.total_map_r(predicted, planted_total, valid=valid)))
            constant.append(torch.as_tensor(P.constant_maps(predicted, truth.grid, valid=valid)))
            if is_siam:
                contrib.append(o.contributions[keep][:, mi].float())
                pooled_seen.append(pooled.float())
                planted_c.append(P.planted_contributions(T, pooled))
                present.append(masks.flatten(2).any(-1))
                fr = P.masks_on_model_grid(masks, model.config.grid, resize=pre.resize, crop=pre.crop)
                maps = o.maps[keep][:, mi]  # (B, K', m, m) the shared attributes
                mass.append(torch.as_tensor(P.mass_in_mask(maps, fr, present[-1])))
                mass_ceiling.append(torch.as_tensor(P.mass_in_mask(fr, fr, present[-1])))
                map_mass.append((maps.float() * valid).sum((-2, -1)))  # (B, K') on the valid cells
                coverage.append((fr.float() * valid).sum((-2, -1)))  # (B, K') true coverage, same cells
        per_target: dict[str, dict[str, Any]] = {}
        for j, (mi_t, di) in enumerate(pairs):
            s, t = torch.cat(per_pred[j]), torch.cat(per_true[j])
            per_target[model.config.targets[mi_t]] = {
                "son_rmse": M.rmse(s, t) if s.numel() else None,
                "son_tau": _clean(M.kendall_tau_b(s, t)) if s.numel() else None,
                "son_n": int(s.numel()),
                "data_target": None if data.targets is None else list(data.targets)[di],
            }
            if j == 0:
                arrays.update(son_pred=s.double().numpy(), son_target=t.double().numpy())
        first = per_target[model.config.targets[m0]]
        out.update(son_rmse=first["son_rmse"], son_tau=first["son_tau"], son_n=first["son_n"], per_target=per_target)
        if truth is not None:
            floor = truth.noise_floor_rmse.get(data.split)
            if floor and out["son_rmse"] is not None:
                out["noise_floor_rmse"] = floor
                out["rmse_over_noise_floor"] = out["son_rmse"] / floor
            tmr, const = _cat(total_r), _cat(constant).astype(bool)
            out["total_map_r"] = _clean(_nanmean(tmr))
            scored = np.isfinite(tmr)  # images whose planted map varies: the same for every model
            out["total_map_constant_share"] = _clean(float(const[scored].mean()) if scored.any() else math.nan)
            details: dict[str, Any] = {
                "total_map_images": int(np.isfinite(tmr).sum()),
                "total_map_planted_constant": int((~np.isfinite(tmr)).sum()),
            }
            arrays.update(son_clean=_cat(clean), total_map_r=tmr, attributes=tuple(shared))
            if is_siam:
                k = len(shared)
                C, Pc, Pr = _cat(contrib, width=k), _cat(planted_c, width=k), _cat(present, width=k) > 0.5
                cr = P.contribution_r(C, Pc, Pr, shared)
                cr_each = P.contribution_r_per_attribute(C, Pc, Pr, shared)
                E = model.effective_templates(m0).detach()[mi]
                T_all = truth.templates[ti]
                seen = P.observed_cells(_cat(pooled_seen).reshape(-1, k, truth.grid, truth.grid))
                tr = P.template_r(E, T_all, shared, valid=valid, cells=seen)  # headline: observed cells
                tr_all = P.template_r(E, T_all, shared, valid=valid)
                sg = P.effect_sign_agreement(C, Pc, Pr, shared)
                mm = _cat(mass)
                mc = P.map_coverage_r(_cat(map_mass, width=k), _cat(coverage, width=k), Pr, shared)
                out["contribution_r"] = _clean(cr.value)
                out["template_r"] = _clean(tr.value)
                out["template_sign_agreement"] = _clean(sg.value)
                out["mass_in_mask"] = _clean(float(mm.mean()) if mm.size else math.nan)
                details.update(contribution_r=cr.to_dict(), contribution_r_per_attribute=cr_each.to_dict(),
                               template_r=tr.to_dict(),
                               template_r_all_cells=tr_all.to_dict(),
                               template_sign_agreement=sg.to_dict(), mass_in_mask_pairs=int(mm.size),
                               mass_in_mask_empty_maps=int((mm == 0).sum()),
                               map_coverage_r=mc.to_dict(),
                               mass_in_mask_coverage_map=_clean(float(_cat(mass_ceiling).mean()) if mm.size else math.nan))
                arrays.update(contributions=C, planted_contributions=Pc, present=Pr, mass_pairs=mm)
            out["planted"] = details
    if is_siam and data.sun is not None and len(data.sun):  # type: ignore[arg-type]
        cols = [n for n in names if n in data.sun_attributes]
        li = _index(data.sun_attributes, cols)
        pi = _index(names, cols)
        pres, labels = [], []
        for b in _loader(data.sun, batch_size, num_workers):
            if b.attributes is None:
                continue
            o = model(b.image)
            pres.append(o.presence[b.attributes_mask][:, pi].float())
            labels.append(b.attributes[b.attributes_mask][:, li].float())
        if pres:
            ap = M.attribute_ap(torch.cat(pres), torch.cat(labels), cols)
            out["sun_map"] = _clean(ap.mean_ap)
            out["sun_ap"] = ap.to_dict()
            arrays.update(sun_attributes=tuple(cols), sun_presence=_cat(pres), sun_labels=_cat(labels))
    if return_arrays:
        out["arrays"] = arrays
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _clean(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def sun_map_ceiling(truth: P.PlantedTruth, sun: Dataset, names: Sequence[str]) -> float | None:
    """mAP of the best possible detector on the SUN split: each image's *true visible area* of each
    attribute, ranked against the (noisy, annotator-drawn) labels >= 0.5. No model should be
    expected above it. ``sun`` needs ``ids`` and ``labels`` (N, K) like
    :class:`~siam.data.sun_attributes.SunAttributes`; None without SUN masks."""
    ids, labels = getattr(sun, "ids", None), getattr(sun, "labels", None)
    if ids is None or labels is None or not (truth.root / "masks" / "sun").is_dir():
        return None
    shared = [n for n in names if n in truth.attributes]
    ti, li = _index(truth.attributes, shared), _index(names, shared)
    area = np.stack([truth.masks("sun", i)[ti].reshape(len(ti), -1).mean(1) for i in ids])  # (N, K')
    lab = np.asarray(labels)[:, li]
    return _clean(M.attribute_ap(area, lab, shared).mean_ap)
