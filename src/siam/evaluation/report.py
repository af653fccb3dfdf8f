"""Table 2/3-style report (Markdown + JSON) of several models side by side.

``report.json`` (stable keys, see the README)::

    {"noise_floor_rmse": float | null, "wall_time_s": float | null, "split": "test",
     "models": {"baseline": {...}, "siam_no_finetune": {...}, "siam_joint": {...}},
     "targets": [{"name", "value", "target", "met"}, ...]   # quickstart only; met null: n/a
     ...}

Each model carries ``son_rmse``, ``son_tau``, ``sun_map``, ``contribution_r``, ``template_r``,
``template_sign_agreement``, ``mass_in_mask``, ``total_map_r``, ``rmse_over_noise_floor`` and
``checkpoint`` (null where a metric does not apply, e.g. ``sun_map`` of the baseline); the SoN
keys are the model's first target's, and ``per_target`` holds ``{target: {son_rmse, son_tau,
son_n, data_target}}`` for every target evaluated (a "Per target" table when a model has several).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MODEL_ORDER", "ROWS", "build_report", "render_markdown", "write_report"]

#: The paper's table order (Tables 2 and 3).
MODEL_ORDER: tuple[str, ...] = ("baseline", "siam_no_finetune", "siam_joint")
LABELS: dict[str, str] = {
    "baseline": "Baseline (unconstrained CNN)",
    "siam_no_finetune": "SIAM, no finetuning",
    "siam_joint": "SIAM, joint",
}
#: (key, label, higher_is_better) of each table row.
ROWS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "ScenicOrNot (Table 2)": (
        ("son_rmse", "RMSE", False),
        ("son_tau", "Kendall's tau-b", True),
        ("rmse_over_noise_floor", "RMSE / noise floor", False),
    ),
    "Attributes (Table 3)": (
        ("sun_map", "SUN mean AP (labels >= 0.5)", True),
        ("son_attributes_map", "SoN attribute set mean AP", True),
    ),
    "Planted-truth recovery": (
        ("contribution_r", "contribution_r (how much)", True),
        ("template_r", "template_r", True),
        ("template_sign_agreement", "template sign agreement", True),
        ("mass_in_mask", "mass_in_mask (where)", True),
        ("total_map_r", "total_map_r (where; baseline: CAM)", True),
    ),
}
MODEL_KEYS: tuple[str, ...] = tuple(k for rows in ROWS.values() for k, _, _ in rows) + ("checkpoint",)


def build_report(
    models: Mapping[str, Mapping[str, Any]],
    *,
    noise_floor_rmse: float | None = None,
    wall_time_s: float | None = None,
    split: str = "test",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the JSON report; every model gets every key of :data:`MODEL_KEYS` (None if n/a)."""
    ordered = [n for n in MODEL_ORDER if n in models] + [n for n in models if n not in MODEL_ORDER]
    out_models: dict[str, dict[str, Any]] = {}
    for name in ordered:
        m = dict(models[name])
        entry = {k: _num(m.get(k)) if k != "checkpoint" else m.get(k) for k in MODEL_KEYS}
        entry.update({k: v for k, v in m.items() if k not in entry})
        out_models[name] = entry
    report: dict[str, Any] = {
        "noise_floor_rmse": _num(noise_floor_rmse),
        "wall_time_s": _num(wall_time_s),
        "split": split,
        "models": out_models,
    }
    if extra:
        report.update(extra)
    return report


def _num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def render_markdown(report: Mapping[str, Any], *, title: str = "SIAM evaluation report") -> str:
    """Markdown tables: models as columns (paper order), metrics as rows; best value in bold."""
    models: Mapping[str, Mapping[str, Any]] = report["models"]
    names = list(models)
    lines = [f"# {title}", ""]
    split = report.get("split", "test")
    floor = report.get("noise_floor_rmse")
    lines.append(f"Held-out split: **{split}**" + (f"; noise floor RMSE = {floor:.3f}" if floor else "") + ".")
    if report.get("wall_time_s") is not None:
        lines.append(f"Total wall time: {report['wall_time_s']:.0f} s.")
    lines.append("")
    header = "| metric | " + " | ".join(LABELS.get(n, n) for n in names) + " |"
    rule = "|---|" + "---:|" * len(names)
    for section, rows in ROWS.items():
        present = [r for r in rows if any(models[n].get(r[0]) is not None for n in names)]
        if not present:
            continue
        lines += [f"## {section}", "", header, rule]
        for key, label, higher in present:
            vals = [models[n].get(key) for n in names]
            nums = [v for v in vals if isinstance(v, (int, float))]
            best = (max(nums) if higher else min(nums)) if len(nums) > 1 else None
            cells = [f"**{_fmt(v)}**" if best is not None and v == best else _fmt(v) for v in vals]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _per_target_table(models, names)
    agreement = report.get("son_attributes_agreement") or {}
    if agreement.get("fleiss_kappa") is not None:
        lines += [f"SoN attribute set: agreement between its {agreement['raters']} annotators, "
                  f"mean Fleiss' kappa = {agreement['fleiss_kappa']:.3f}.", ""]
    targets = report.get("targets")
    if targets:
        lines += ["## Targets", "", "Each target beside its measured ceiling (the most this data allows) and the "
                  "fraction of it reached; a target above its ceiling is a defect of the target.", "",
                  "| target | measured | required | ceiling | fraction of ceiling | met |", "|---|---:|---|---:|---:|:---:|"]
        for t in targets:
            flag = " (**target above its ceiling**)" if t.get("above_ceiling") else ""
            lines.append(f"| {t['name']}{flag} | {_fmt(t['value'])} | {t['target']} | {_fmt(t.get('ceiling'))} | "
                         f"{_fmt(t.get('fraction'))} | {_met(t['met'])} |")
        lines.append("")
    notes = report.get("notes")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    ckpts = [(n, models[n].get("checkpoint")) for n in names if models[n].get("checkpoint")]
    if ckpts:
        lines += ["## Model files", ""] + [f"- {LABELS.get(n, n)}: `{p}`" for n, p in ckpts] + [""]
    return "\n".join(lines)


def _met(met: bool | None) -> str:
    """A target's verdict: yes, **no**, or n/a (None: it needs planted truth the data lacks)."""
    return "n/a" if met is None else "yes" if met else "**no**"


def _per_target_table(models: Mapping[str, Mapping[str, Any]], names: list[str]) -> list[str]:
    """Markdown rows of RMSE / tau / n per target, when some model was evaluated on several."""
    per = {n: models[n].get("per_target") or {} for n in names}
    if not any(len(p) > 1 for p in per.values()):
        return []
    targets = list(dict.fromkeys(t for p in per.values() for t in p))
    lines = ["## Per target", "", "| target | metric | " + " | ".join(LABELS.get(n, n) for n in names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for t in targets:
        for key, label in (("son_rmse", "RMSE"), ("son_tau", "Kendall's tau-b"), ("son_n", "images")):
            lines.append(f"| {t} | {label} | " + " | ".join(_fmt((per[n].get(t) or {}).get(key)) for n in names) + " |")
    return lines + [""]


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str], *, title: str | None = None) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; returns their paths."""
    return write_json_and_markdown(
        out_dir, "report", report, render_markdown(report, **({"title": title} if title else {}))
    )


def write_json_and_markdown(
    out_dir: str | os.PathLike[str], stem: str, obj: Any, markdown: str
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (atomically, strict JSON: no NaN) and ``<stem>.md`` into ``out_dir``."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    j, m = d / f"{stem}.json", d / f"{stem}.md"
    tmp = d / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")
    os.replace(tmp, j)
    m.write_text(markdown)
    return j, m
