"""Assemble ``truth.json`` (keys in the README, section "siam truth") and render ``truth.md``.

Every per-seed number becomes ``{mean, sd, values}`` (:func:`seed_stats`: ``sd`` with ddof = 1,
0 for one seed; seeds where a metric is undefined are null in ``values`` and left out of the mean).
Headline numbers also carry ``ci95``: the 95 % percentile-bootstrap interval over the test images of
one run, averaged over the seeds (bounds averaged; ``ci95_per_seed`` lists each), i.e. how much one
run's number moves with the test sample, beside ``sd``, how much it moves with the seed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siam.evaluation.report import write_json_and_markdown

__all__ = ["METRICS", "seed_stats", "assemble", "render_markdown", "write_truth"]

#: The planted-truth metrics reported per model (``models.<name>.<metric>``).
METRICS: tuple[str, ...] = ("rmse_over_noise_floor", "sun_map", "contribution_r", "template_r",
                            "template_sign_agreement", "mass_in_mask", "total_map_r", "correctness")
#: Higher is better for every metric but the RMSE ratio (its ceiling, the floor, is 1).
_LOWER_IS_BETTER = {"rmse_over_noise_floor"}
_CEILING_OF = {"sun_map": "sun_map", "mass_in_mask": "mass_in_mask", "contribution_r": "contribution_r",
               "template_r": "template_r"}
MODEL_NAMES = ("siam_joint", "siam_no_finetune", "baseline")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def seed_stats(values: Sequence[Any]) -> dict[str, Any]:
    """``{mean, sd, values}`` over seeds (non-finite values -> null and left out)."""
    vals = [_num(v) for v in values]
    ok = [v for v in vals if v is not None]
    mean = float(np.mean(ok)) if ok else None
    sd = float(np.std(ok, ddof=1)) if len(ok) > 1 else (0.0 if ok else None)
    return {"mean": mean, "sd": sd, "values": vals}


def _with_ci(stats: dict[str, Any], cis: Sequence[Any]) -> dict[str, Any]:
    got = [c for c in cis if c is not None]
    stats["ci95"] = [float(np.mean([c[0] for c in got])), float(np.mean([c[1] for c in got]))] if got else None
    stats["ci95_per_seed"] = list(cis)
    return stats


def _correctness_ci(values: np.ndarray, n_boot: int) -> list[float] | None:
    from siam.evaluation.planted import bootstrap_ci

    v = np.asarray(values, dtype=float)
    if not np.isfinite(v).any():
        return None
    lo, hi = bootstrap_ci(v, stat=np.nanmean, n_boot=n_boot, seed=0)
    return [float(lo), float(hi)] if np.isfinite(lo) and np.isfinite(hi) else None


def _mean_dict(dicts: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [_num(d.get(key)) for d in dicts]
    ok = [v for v in vals if v is not None]
    return float(np.mean(ok)) if ok else None


def _effects(arrays: Mapping[str, Any], names: Sequence[str], which: str) -> dict[str, float | None]:
    """Mean of ``which`` (contributions or planted_contributions) over the images showing each attribute."""
    if arrays.get(which) is None:
        return {}
    c, pr = np.asarray(arrays[which], float), np.asarray(arrays["present"], bool)
    order = list(arrays.get("attributes") or names)
    out: dict[str, float | None] = {}
    for a in names:
        if a not in order:
            continue
        k = order.index(a)
        out[a] = float(c[pr[:, k], k].mean()) if pr[:, k].any() else None
    return out


def _per_attribute(
    names: Sequence[str], seeds: Sequence[int], per_seed: Mapping[int, Mapping[str, Any]],
    oracle: Mapping[int, Mapping[str, Any]], train_presence: Mapping[str, float],
) -> dict[str, list[dict[str, Any]]]:
    planted = _effects(per_seed[seeds[0]]["siam_joint"]["_arrays"], names, "planted_contributions")
    out: dict[str, list[dict[str, Any]]] = {}
    for rname in ("siam_joint", "siam_no_finetune"):
        learned = [_effects(per_seed[s][rname]["_arrays"], names, "contributions") for s in seeds]
        def each(key: str) -> list[Mapping[str, Any]]:  # a planted Recovery's per-attribute values, per seed
            return [((per_seed[s][rname].get("planted") or {}).get(key) or {}).get("per_attribute") or {} for s in seeds]

        cr, tr, mc = each("contribution_r_per_attribute"), each("template_r"), each("map_coverage_r")
        out[rname] = [{"attribute": a, "planted_effect": planted.get(a), "learned_effect": _mean_dict(learned, a),
                       "contribution_r": _mean_dict(cr, a), "template_r": _mean_dict(tr, a),
                       "map_coverage_r": _mean_dict(mc, a),
                       "train_presence": _num(train_presence.get(a))} for a in names]
    ocr = [o["per_attribute"]["contribution_r"] for o in oracle.values()]
    otr = [o["per_attribute"]["template_r"] for o in oracle.values()]
    olearned = [_effects({"contributions": o["contributions"], "present": o["present"], "attributes": names}, names,
                         "contributions") for o in oracle.values()]
    out["oracle_f"] = [{"attribute": a, "planted_effect": planted.get(a), "learned_effect": _mean_dict(olearned, a),
                        "contribution_r": _mean_dict(ocr, a), "template_r": _mean_dict(otr, a),
                        "map_coverage_r": 1.0,  # its maps are the true coverage
                        "train_presence": _num(train_presence.get(a))} for a in names]
    return out


def assemble(
    *, names: Sequence[str], seeds: Sequence[int], budget: str, budget_config: Mapping[str, Any],
    per_seed: Mapping[int, Mapping[str, Any]], ceilings: Mapping[str, Any], oracle: Mapping[int, Mapping[str, Any]],
    shuffled: Mapping[int, Mapping[str, Any]], randomised: Mapping[int, Sequence[Mapping[str, Any]]],
    decorrelated: Mapping[int, Mapping[str, Any]], correctness: Mapping[int, Mapping[str, Any]],
    train_presence: Mapping[str, float], floor: float | None, counts: Mapping[str, Any], notes: Sequence[str],
    n_boot: int, worlds: Mapping[str, Any],
) -> dict[str, Any]:
    """The truth report (plain JSON-serialisable dict) from the per-seed measurements."""
    models: dict[str, dict[str, Any]] = {}
    for rname in MODEL_NAMES:
        entry: dict[str, Any] = {}
        for metric in METRICS:
            if metric == "correctness":
                key = "gradcam_baseline" if rname == "baseline" else rname
                per = [correctness[s][key]["correctness"] if s in correctness else None for s in seeds]
                stats = seed_stats([np.nanmean(p) if p is not None and np.isfinite(p).any() else None for p in per])
                entry[metric] = _with_ci(stats, [_correctness_ci(p, n_boot) if p is not None else None for p in per])
                continue
            vals = [per_seed[s][rname].get(metric) for s in seeds]
            entry[metric] = _with_ci(seed_stats(vals), [(per_seed[s][rname].get("ci95") or {}).get(metric) for s in seeds])
        if rname == "baseline":  # metrics without an attribute map do not apply to the baseline
            for metric in ("sun_map", "contribution_r", "template_r", "template_sign_agreement", "mass_in_mask"):
                entry[metric] = {"mean": None, "sd": None, "values": [None] * len(seeds), "ci95": None,
                                 "ci95_per_seed": [None] * len(seeds), "applies": False}
        entry["son_rmse"] = seed_stats([per_seed[s][rname].get("son_rmse") for s in seeds])
        entry["checkpoints"] = [per_seed[s][rname].get("checkpoint") for s in seeds]
        models[rname] = entry
    ceil = {
        "sun_map": seed_stats([ceilings.get("sun_map")]),
        "mass_in_mask": seed_stats([ceilings.get("mass_in_mask")]),
        "contribution_r": seed_stats([oracle[s]["contribution_r"] for s in seeds]),
        "template_r": seed_stats([oracle[s]["template_r"] for s in seeds]),
        "rmse_over_noise_floor": seed_stats([oracle[s].get("rmse_over_noise_floor") for s in seeds]),
    }
    ceil["sun_map"]["how"] = "ranking each attribute by its true visible area against the noisy SUN labels"
    ceil["mass_in_mask"]["how"] = "a map equal to the true coverage of each cell of the model's grid"
    for k in ("contribution_r", "template_r", "rmse_over_noise_floor"):
        ceil[k]["how"] = "oracle-f: g trained on the true masks pooled to the model's grid (same recipe, SoN data, seeds)"
    fraction: dict[str, dict[str, float | None]] = {}
    for rname, entry in models.items():
        fraction[rname] = {}
        for metric in METRICS:
            m = entry[metric]["mean"]
            if metric == "rmse_over_noise_floor":
                # the oracle run's ratio over the measured one (1: as close to the floor as the oracle-f run;
                # the issue's "within 1.15x of the oracle run's" is >= 1 / 1.15); the floor (1.0) without it
                c = ceil[metric]["mean"] or 1.0
                fraction[rname][metric] = None if not m else c / m
                continue
            c = ceil[_CEILING_OF[metric]]["mean"] if metric in _CEILING_OF else 1.0 if metric != "total_map_r" else None
            fraction[rname][metric] = None if m is None or not c else m / c
    controls = {
        "shuffled_scores": {
            "contribution_r": seed_stats([shuffled[s]["contribution_r"] for s in seeds]),
            "template_r": seed_stats([shuffled[s]["template_r"] for s in seeds]),
            "reference": {k: seed_stats([shuffled[s]["reference"][k] for s in seeds]) for k in ("contribution_r", "template_r")},
            "how": "g trained over each seed's frozen f (son-head model) on SoN scores permuted across images; "
                   "reference: the same loop on the true scores",
        },
        "randomised": {
            "model": "siam_joint",
            "steps": [{"name": step["name"], **seed_stats([randomised[s][i]["spearman"] for s in seeds])}
                      for i, step in enumerate(randomised[seeds[0]])],
            "how": "cumulative re-initialisation top down (g, attribute layer, backbone blocks); mean per-image "
                   "Spearman between the original and the new contribution maps",
        },
    }
    for step in controls["randomised"]["steps"]:
        step["spearman"] = step["mean"]
    dec: dict[str, Any] = {}
    if decorrelated:
        for rname in ("siam_joint", "siam_no_finetune"):
            dec[rname] = {"contribution_r": seed_stats([decorrelated[s][rname] for s in seeds])}
    corr: dict[str, Any] = {}
    if correctness:
        for key in ("siam_joint", "gradcam_baseline", "random"):
            per = [correctness[s][key]["correctness"] for s in seeds]
            stats = seed_stats([np.nanmean(p) if np.isfinite(p).any() else None for p in per])
            corr[key] = _with_ci(stats, [_correctness_ci(p, n_boot) for p in per])
            corr[key]["images"] = int(np.isfinite(per[0]).sum())
        corr["scale"] = "0.5 * Spearman rho + 0.5 per image, across its present attributes (FunnyBirds)"
        corr["reference"] = {"gradcam_resnet50": 0.55, "bcos_resnet50": 0.69, "protopnet": 0.83}
    report: dict[str, Any] = {
        "seeds": list(seeds), "budget": budget, "budget_config": dict(budget_config), "wall_time_s": None,
        "noise_floor_rmse": _num(floor), "models": models, "ceilings": ceil, "fraction_of_ceiling": fraction,
        "controls": controls, "decorrelated": dec, "correctness": corr,
        "per_attribute": _per_attribute(names, seeds, per_seed, oracle, train_presence),
        "test_counts": dict(counts), "worlds": dict(worlds), "notes": list(notes),
    }
    report["gaps"] = _gaps(report)
    report["summary"] = _summary(report)
    return report


def _f(v: Any, digits: int = 3) -> str:
    return "n/a" if _num(v) is None else f"{float(v):.{digits}f}"


def _gaps(report: Mapping[str, Any]) -> list[str]:
    """For each gap between SIAM joint and its ceiling, whether f or g accounts for it."""
    joint, ceil = report["models"]["siam_joint"], report["ceilings"]
    nf = report["models"]["siam_no_finetune"]
    out = []
    for metric in ("contribution_r", "template_r"):
        m, o, n = joint[metric]["mean"], ceil[metric]["mean"], nf[metric]["mean"]
        if m is None or o is None:
            continue
        out.append(f"{metric}: SIAM joint {_f(m)}, no finetuning {_f(n)}, oracle-f (perfect f, same g recipe) {_f(o)}. "
                   f"The gap to the oracle ({_f(o - m)}) is f's: g trained the same way on perfect maps reaches "
                   f"{_f(o)}; the gap from the oracle to 1 ({_f(1 - o)}) is g's recipe, the noise and the data size.")
        if metric == "template_r":
            out[-1] += (" For template_r the oracle-f value is not an upper bound: a template follows where its map "
                        "puts the mass, and g over a real f's maps can exceed it (README \"Why template_r swings\"; "
                        "`python -m siam.truth.spread DIR` refits g over fixed inputs to split g's spread from f's).")
    for metric in ("sun_map", "mass_in_mask"):
        m, c = joint[metric]["mean"], ceil[metric]["mean"]
        if m is not None and c is not None:
            out.append(f"{metric}: SIAM joint {_f(m)} of a ceiling {_f(c)}; the gap ({_f(c - m)}) is f's alone "
                       "(g does not enter this metric).")
    return out


def _summary(report: Mapping[str, Any]) -> list[str]:
    j = report["models"]["siam_joint"]
    c = report["controls"]
    lines = [f"siam truth: {len(report['seeds'])} seed(s), budget {report['budget']}"]
    for metric in METRICS:
        s = j[metric]
        ci = s.get("ci95")
        ci_text = f"[{_f(ci[0])}, {_f(ci[1])}]" if ci else "n/a"
        lines.append(f"  siam_joint {metric}: {_f(s['mean'])} +- {_f(s['sd'])} (seeds), ci95 {ci_text}"
                     + (f", ceiling {_f(report['ceilings'][metric]['mean'])}" if metric in report["ceilings"] else ""))
    lines.append(f"  shuffled control contribution_r {_f(c['shuffled_scores']['contribution_r']['mean'])}, "
                 f"template_r {_f(c['shuffled_scores']['template_r']['mean'])}")
    steps = c["randomised"]["steps"]
    if steps:
        lines.append(f"  randomisation last step ({steps[-1]['name']}) Spearman {_f(steps[-1]['spearman'])}")
    corr = report["correctness"]
    if corr:
        lines.append("  correctness: " + ", ".join(f"{k} {_f(corr[k]['mean'])}" for k in ("siam_joint", "gradcam_baseline", "random")))
    lines += [f"  gap: {g}" for g in report.get("gaps") or []]
    return lines


def _cell(stats: Mapping[str, Any] | None) -> str:
    if not stats or stats.get("mean") is None:
        return "n/a"
    text = f"{stats['mean']:.3f} ± {stats['sd']:.3f}" if stats.get("sd") else f"{stats['mean']:.3f}"
    ci = stats.get("ci95")
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def render_markdown(report: Mapping[str, Any]) -> str:
    """``truth.md``: models x metrics with seed spread and bootstrap intervals, ceilings and
    fractions, controls, decorrelated world, correctness, per-attribute tables, notes."""
    models = report["models"]
    names = list(models)
    L = ["# SIAM truth report", "",
         f"Budget **{report['budget']}**, seeds {report['seeds']}, wall time "
         f"{_f(report.get('wall_time_s'), 0)} s; noise floor RMSE {_f(report.get('noise_floor_rmse'))}. "
         "Cells: mean ± sd over seeds [95 % bootstrap interval over the test images, averaged over seeds].", "",
         "## Planted-truth metrics", "", "| metric | " + " | ".join(names) + " | ceiling |",
         "|---|" + "---:|" * (len(names) + 1)]
    for metric in METRICS:
        ceil = report["ceilings"].get(metric)
        L.append(f"| {metric} | " + " | ".join(_cell(models[n][metric]) for n in names) + f" | {_cell(ceil) if ceil else '—'} |")
    L += ["", "## Fraction of the ceiling", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for metric in METRICS:
        L.append(f"| {metric} | " + " | ".join(_f(report["fraction_of_ceiling"][n].get(metric)) for n in names) + " |")
    L += ["", "Ceilings: " + "; ".join(f"{k}: {v.get('how')}" for k, v in report["ceilings"].items()) + ". "
          "rmse_over_noise_floor: fraction = the oracle-f run's ratio / the model's (1 / ratio without one); template_sign_agreement and "
          "correctness: fraction of 1.", ""]
    c = report["controls"]
    L += ["## Controls", "", "Shuffled scores (must be ~0): contribution_r "
          f"{_cell(c['shuffled_scores']['contribution_r'])}, template_r {_cell(c['shuffled_scores']['template_r'])}; "
          f"the same loop on the true scores: contribution_r {_cell(c['shuffled_scores']['reference']['contribution_r'])}, "
          f"template_r {_cell(c['shuffled_scores']['reference']['template_r'])}.", "",
          "Cascading randomisation (Adebayo et al. 2018) of SIAM joint: Spearman between the original and the "
          "randomised contribution maps (must fall towards 0).", "", "| step (cumulative) | Spearman |", "|---|---:|"]
    L += [f"| {s['name']} | {_cell(s)} |" for s in c["randomised"]["steps"]]
    L.append("")
    if report["decorrelated"]:
        L += ["## Decorrelated test world", "", "contribution_r on a world where every attribute is drawn "
              "independently (no co-occurrence survives): " + ", ".join(
                  f"{n} {_cell(v['contribution_r'])}" for n, v in report["decorrelated"].items()) + ".", ""]
    corr = report["correctness"]
    if corr:
        L += ["## Correctness (FunnyBirds)", "", f"{corr['scale']}; {corr['siam_joint']['images']} images with >= 2 "
              "attributes. Grad-CAM has no native regression target: the baseline's predicted score is its target, "
              "and its ReLU keeps only positive evidence.", "", "| explanation | correctness |", "|---|---:|"]
        L += [f"| {k} | {_cell(corr[k])} |" for k in ("siam_joint", "gradcam_baseline", "random")]
        L += ["", "For reference, Hesse et al. (ICCV 2023) report 0.55 for Grad-CAM and 0.69 for B-cos on ResNet-50, "
              "and 0.83 for ProtoPNet.", ""]
    if report.get("gaps"):
        L += ["## Where the gaps are", ""] + [f"- {g}" for g in report["gaps"]] + [""]
    for rname, rows in report["per_attribute"].items():
        L += [f"## Per attribute: {rname}", "", "| attribute | planted effect | learned effect | contribution_r | "
              "template_r | map_coverage_r | train presence |", "|---|---:|---:|---:|---:|---:|---:|"]
        L += [f"| {r['attribute']} | {_f(r['planted_effect'])} | {_f(r['learned_effect'])} | {_f(r['contribution_r'])} | "
              f"{_f(r['template_r'])} | {_f(r.get('map_coverage_r'))} | {_f(r['train_presence'])} |" for r in rows]
        L.append("")
    L += ["map_coverage_r: Pearson r across the test images between the mass of the attribute's map and its true "
          "coverage. g reads the effect from that mass, so where it is low the learned effect is f's gap, not g's.", ""]
    counts = report.get("test_counts") or {}
    if counts.get("per_attribute"):
        short = counts.get("short") or {}
        L += ["## Test data", "", f"Split {counts.get('split')!r}; every attribute needs >= {counts.get('min_positives')} "
              f"positive SUN images and SoN images showing it. Short: SUN {short.get('sun')}, SoN {short.get('son')}. "
              "Fewest: " + ", ".join(f"{a} {v['sun']}/{v['son']}" for a, v in sorted(
                  counts["per_attribute"].items(), key=lambda kv: min(kv[1]['sun'], kv[1]['son']))[:5]) + " (SUN/SoN).", ""]
    if report.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(L)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return _num(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_truth(report: Mapping[str, Any], out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``truth.json`` (atomically) and ``truth.md`` into ``out``."""
    plain = _plain(report)
    return write_json_and_markdown(out, "truth", plain, render_markdown(plain))
