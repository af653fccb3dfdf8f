"""The explanation step of ``siam quickstart``: the HTML report and the faithfulness numbers.

``siam.quickstart`` calls ``siam.explain.quickstart_hook(out=, data=, models=, report=)`` after
evaluation; the hook explains the first test images of ``data`` (the ``siam synth`` layout) with
the joint SIAM model, compares with the baseline, and writes ``out/report.html`` and its data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["quickstart_hook"]

#: Report-model names the quickstart uses (siam.quickstart.REPORT_MODELS), most preferred first.
SIAM_MODELS: tuple[str, ...] = ("siam_joint", "siam_no_finetune")


def _scalars(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is None or isinstance(v, (int, float, bool))}


def quickstart_hook(
    *,
    out: str | os.PathLike[str],
    data: str | os.PathLike[str],
    models: Mapping[str, str | os.PathLike[str]],
    report: Mapping[str, Any],
    split: str = "test",
    n_images: int = 48,
    n_panels: int = 4,
    faithfulness_images: int = 8,
    faithfulness_steps: int = 8,
) -> dict[str, Any]:
    """Write ``out/report.html`` for the quickstart; return what goes into its report JSON.

    ``models``: report name -> model file (``siam_joint`` preferred, ``baseline`` optional);
    ``report``: the evaluation report, whose ``models`` metrics fill the metrics table.
    Returns ``{"html", "model", "n_images", "n_failed", "faithfulness": {benchmark: {method: AUC}}}``.
    """
    import siam
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.explain.batch import explain_many
    from siam.explain.explanation import model_identity
    from siam.explain.report import model_report_inputs, write_html_report
    from siam.models.baseline import Baseline
    from siam.models.siam import SIAM

    name = next((n for n in SIAM_MODELS if n in models), None)
    if name is None:
        raise ValueError(f"models has no SIAM model; expected one of {list(SIAM_MODELS)}, got {sorted(models)}")
    model = siam.load_checkpoint(models[name])
    if not isinstance(model, SIAM):
        raise ValueError(f"models[{name!r}] = {models[name]} is a {model.config.kind} model, not SIAM")
    baseline = siam.load_checkpoint(models["baseline"]) if "baseline" in models else None
    if baseline is not None and not isinstance(baseline, Baseline):
        raise ValueError(f"models['baseline'] = {models['baseline']} is not a baseline model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    son = ScenicOrNot(Path(data) / "son", split=split, report_path=out / f"missing_images_{split}.json")
    paths = [str(p) for p in son.paths[:n_images]]
    labels = [float(s) for s in son.scores[:n_images]]
    ident = model_identity(model, checkpoint=models[name])
    explained = explain_many(
        model, paths, baseline=baseline, labels=labels, model_id=ident,
        baseline_id=None if baseline is None else model_identity(baseline, checkpoint=models["baseline"]),
    )
    kw = model_report_inputs(model, explained, baseline=baseline, n_panels=n_panels,
                             faithfulness_images=faithfulness_images, faithfulness_steps=faithfulness_steps)
    metrics = {k: _scalars(v) for k, v in (report.get("models") or {}).items() if isinstance(v, Mapping)}
    notes = [f"explanations of the first {len(paths)} images of the {split} split ({name})"]
    if explained.failures:
        notes.append(f"{len(explained.failures)} image(s) could not be read and were left out")
    html = write_html_report(out, title="SIAM quickstart report", model=ident, metrics=metrics, notes=notes, **kw)
    faith = kw.get("faithfulness") or {}
    return {
        "html": str(html),
        "model": name,
        "n_images": len(explained),
        "n_failed": len(explained.failures),
        "faithfulness": {b: faith[b]["auc"] for b in ("deletion", "insertion") if b in faith},
    }
