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
#: images exceeds this share (``planted.template_r_observed_cells``).
OBSERVED_CELL_SHARE = 0.002

__all__ = ["EvalData", "evaluate_model", "sun_map_ceiling"]


@dataclass
class EvalData:
    """Held-out data: SoN images with scores, SUN images with labels (names = label columns), and
    optionally the planted truth of a synthetic folder. ``split`` names the noise floor to use."""

    son: Dataset | None
    sun: Dataset | None
    sun_attributes: Sequence[str] = ()
    truth: P.PlantedTruth | None = None
    split: str = "test"


def _loader(ds: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)


def _index(names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    pos = {n: i for i, n in enumerate(names)}
    return [pos[n] for n in wanted]


@torch.no_grad()
def evaluate_model(
    model: SIAM | Baseline,
    data: EvalData,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
) -> dict[str, Any]:
    """All report metrics of ``model`` on ``data`` (keys as in ``report.json``; None = n/a).

    SoN: ``son_rmse``, ``son_tau`` (tau-b), ``son_n``. SUN (SIAM only): ``sun_map`` and
    ``sun_ap`` (per attribute, labels >= 0.5 positive, no-positive attributes listed in
    ``sun_excluded``). Planted truth: ``rmse_over_noise_floor``, ``contribution_r``,
    ``template_r``, ``template_sign_agreement``, ``mass_in_mask`` (SIAM) and ``total_map_r``
    (SIAM: total contribution map; baseline: CAM), with per-attribute details under ``planted``.
    """
    model.eval()
    is_siam = isinstance(model, SIAM)
    out: dict[str, Any] = {k: None for k in (
        "son_rmse", "son_tau", "son_n", "sun_map", "contribution_r", "template_r",
        "template_sign_agreement", "mass_in_mask", "total_map_r", "rmse_over_noise_floor")}
    truth = data.truth
    names = tuple(model.attributes)
    shared = [n for n in names if truth is not None and n in truth.attributes]
    mi = _index(names, shared)  # model columns of the shared attributes
    ti = _index(truth.attributes, shared) if truth is not None else []
    valid = border_mask(model.config.grid, model.config.border) if is_siam else None
    pre = model.preprocessing
    if data.son is not None and len(data.son):  # type: ignore[arg-type]
        scores, targets, contrib, planted_c, present, pooled_seen = [], [], [], [], [], []
        mass, mass_ceiling, total_r = [], [], []
        for b in _loader(data.son, batch_size, num_workers):
            mask = b.score_mask
            o = model(b.image)
            scores.append(o.score[mask].float())
            targets.append(b.score[mask].float())
            if truth is None:
                continue
            all_masks = torch.as_tensor(np.stack([truth.masks("son", i) for i in b.ids]))  # (B, K_t, H, W)
            pooled_all = P.pool_masks(all_masks, truth.grid)  # (B, K_t, m, m)
            planted_total = P.planted_total_maps(truth.templates, pooled_all)  # (B, m, m), every attribute
            masks, pooled = all_masks[:, ti], pooled_all[:, ti]  # (B, K', ...) the model's attributes
            T = torch.as_tensor(truth.templates[ti], dtype=torch.float32)  # (K', m, m)
            if is_siam:
                contrib.append(o.contributions[:, mi].float())
                pooled_seen.append(pooled.float())
                planted_c.append(P.planted_contributions(T, pooled))
                present.append(masks.flatten(2).any(-1))
                fr = P.masks_on_model_grid(masks, model.config.grid, resize=pre.resize, crop=pre.crop)
                mass.append(P.mass_in_mask(o.maps[:, mi], fr, present[-1]))
                mass_ceiling.append(P.mass_in_mask(fr, fr, present[-1]))
                total_r.append(P.total_map_r(o.total_map, planted_total, valid=valid))
            else:
                total_r.append(P.total_map_r(o.cam, planted_total))
        s, t = torch.cat(scores), torch.cat(targets)
        out["son_n"] = int(s.numel())
        if s.numel():
            out["son_rmse"] = M.rmse(s, t)
            out["son_tau"] = _clean(M.kendall_tau_b(s, t))
        if truth is not None:
            floor = truth.noise_floor_rmse.get(data.split)
            if floor and out["son_rmse"] is not None:
                out["noise_floor_rmse"] = floor
                out["rmse_over_noise_floor"] = out["son_rmse"] / floor
            out["total_map_r"] = _clean(_nanmean(np.concatenate(total_r)))
            details: dict[str, Any] = {"total_map_images": int(np.isfinite(np.concatenate(total_r)).sum())}
            if is_siam:
                cr = P.contribution_r(torch.cat(contrib), torch.cat(planted_c), torch.cat(present), shared)
                E = model.effective_templates().detach()[mi]
                T_all = truth.templates[ti]
                tr = P.template_r(E, T_all, shared, valid=valid)
                seen = torch.cat(pooled_seen).mean(0) > OBSERVED_CELL_SHARE  # (K', m, m)
                tr_seen = P.template_r(E, T_all, shared, valid=valid, cells=seen)
                sg = P.effect_sign_agreement(torch.cat(contrib), torch.cat(planted_c), torch.cat(present), shared)
                mm = np.concatenate(mass)
                out["contribution_r"] = _clean(cr.value)
                out["template_r"] = _clean(tr.value)
                out["template_sign_agreement"] = _clean(sg.value)
                out["mass_in_mask"] = _clean(float(mm.mean()) if mm.size else math.nan)
                details.update(contribution_r=cr.to_dict(), template_r=tr.to_dict(),
                               template_r_observed_cells=tr_seen.to_dict(),
                               template_sign_agreement=sg.to_dict(), mass_in_mask_pairs=int(mm.size),
                               mass_in_mask_coverage_map=float(np.concatenate(mass_ceiling).mean()))
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
