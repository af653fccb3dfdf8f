"""One self-contained HTML report (``siam report``; also called by the quickstart).

:func:`write_html_report` takes already computed pieces (metrics, templates, ranking,
co-occurrence, explanation panels, disagreement panels, faithfulness) and writes ``DIR/report.html``
(every image embedded as a base64 ``data:`` URL; no scripts, no external assets), the figures as
``DIR/figures/*.png`` and the data behind them: ``DIR/report_data.json`` and ``DIR/templates.npz``,
``DIR/panels/*.npz``. :func:`model_report_inputs` computes the pieces from a model and an
:class:`~siam.explain.batch.ExplainedSet`.

``siam report --checkpoint C [--baseline B] [--data DIR | --images ...] --out DIR``: exit code 0
when done, 1 when done but some images could not be read (one stderr line each, noted in the page),
2 for bad arguments, checkpoints or data folders.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.explain._collect import add_common_arguments, collect, labelled_metrics
from siam.explain.batch import ExplainedSet
from siam.explain.explanation import BaselineResult, Explanation, target_slug
from siam.models.baseline import Baseline
from siam.models.siam import SIAM

__all__ = ["ReportPanel", "write_html_report", "model_report_inputs", "labelled_metrics", "add_arguments", "run"]


@dataclass(frozen=True, eq=False)
class ReportPanel:
    """One image to show: its explanation, the original image (None: maps on grey), the baseline on
    it, the true score, and a caption."""

    explanation: Explanation
    image: Image.Image | np.ndarray | None = None
    baseline: BaselineResult | None = None
    label: float | None = None
    caption: str = ""


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #1b7837; padding-bottom: 0.2rem; margin-top: 2.2rem; }
.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f1f7f1; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1rem 0 1.6rem 0; } figcaption { color: #444; font-size: 0.92rem; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4rem 0.8rem; }
.warning { background: #fdecea; border-left: 4px solid #a04000; padding: 0.5rem 0.8rem; font-weight: 600; }
.legend span { display: inline-block; padding: 0 0.4rem; color: white; border-radius: 3px; }
code { background: #f4f4f4; padding: 0 0.2rem; }
nav { margin: 0.8rem 0; font-size: 0.95rem; } nav a { color: #1b7837; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return _esc(v)
    if isinstance(v, (int, np.integer)):
        return _esc(int(v))
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(v) else _esc(f"{v:.4g}")
    if isinstance(v, (dict, list)):
        text = json.dumps(v, default=str)
        return _esc(text if len(text) < 80 else text[:77] + "...")
    return _esc(v)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    """{model: {metric: value}} as models x metrics; a flat {metric: value} as two columns."""
    if metrics and all(isinstance(v, Mapping) for v in metrics.values()):
        cols: list[str] = []
        for v in metrics.values():
            cols += [k for k in v if k not in cols]
        return _table([[name, *(vals.get(c) for c in cols)] for name, vals in metrics.items()], ["model", *cols])
    return _table([[k, v] for k, v in metrics.items()], ["metric", "value"])


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(png, alt)}<figcaption>{caption}</figcaption></figure>"


# --- writing ------------------------------------------------------------------------------------

def _panel_json(p: ReportPanel) -> dict[str, Any]:
    d = p.explanation.to_json()
    d["label"] = p.label
    d["caption"] = p.caption
    d["baseline"] = None if p.baseline is None else p.baseline.to_json()
    return d


def _save_panels(out: Path, kind: str, panels: Sequence[ReportPanel]) -> list[dict[str, Any]]:
    records = []
    for i, p in enumerate(panels):
        npz = out / "panels" / f"{kind}_{i:02d}.npz"
        extra = {} if p.baseline is None else {"baseline_cam": p.baseline.cam}
        p.explanation.save_npz(npz, extra=extra)
        rec = _panel_json(p)
        rec["maps"] = str(npz.relative_to(out))
        records.append(rec)
    return records


def _templates_section(out: Path, put: Any, templates: Any, attributes: Sequence[str] | None, effect: Any,
                       *, slug: str = "", target: str | None = None) -> list[str]:
    """Fig. 4 (and ``templates{slug}.npz``) for one target; [] without templates."""
    from siam.explain import figures as F

    if templates is None:
        return []
    if attributes is None:
        raise ValueError("templates need their attribute names (attributes=...)")
    t = np.asarray(templates, dtype=np.float64)
    np.savez_compressed(out / f"templates{slug}.npz", templates=t, attributes=np.asarray(list(attributes), dtype=str),
                        **({} if effect is None else {"effect": np.asarray(effect)}))
    png = put(f"templates{slug}", F.plot_templates(t, attributes, effect=effect))
    head = "Templates (Fig. 4)" if target is None else f"{_esc(target)}: templates (Fig. 4)"
    what = "the score" if target is None else f"{_esc(target)}"
    return [f"<h2>{head}</h2>" + _figure(
        png, "effective templates",
        f"The effective template E<sub>i</sub> of each attribute: where on the image its presence raises "
        f"(green) or lowers (magenta) {what}; one symmetric colour range, ordered by mean effect.")]


def _ranking_section(put: Any, data: dict[str, Any], ranking: Mapping[str, Any] | None, missing: list[str],
                     *, slug: str = "", target: str | None = None) -> list[str]:
    from siam.explain import figures as F

    if ranking is None:
        if "no attribute ranking (it needs images: --images or --data)" not in missing:
            missing.append("no attribute ranking (it needs images: --images or --data)")
        return []
    data["ranking"] = ranking
    png = put(f"ranking{slug}", F.plot_ranking(dict(ranking)))
    head = "Attribute ranking" if target is None else f"{_esc(target)}: attribute ranking"
    return [f"<h2>{head}</h2>" + _figure(
        png, "attribute ranking",
        f"Mean |contribution| over {ranking.get('n_images', '?')} images; bar colour: the sign of the "
        "mean effect, dot: the signed mean.")]


def _panels_section(out: Path, put: Any, data: dict[str, Any], panels: Sequence[ReportPanel], *, slug: str = "",
                    target: str | None = None) -> list[str]:
    from siam.explain import figures as F

    if not panels:
        return []
    data["panels"] = _save_panels(out, f"panel{slug}", panels)
    parts = []
    for i, p in enumerate(panels):
        png = put(f"panel{slug}_{i:02d}", F.plot_explanation(p.explanation, p.image, baseline=p.baseline))
        label = "" if p.label is None else f" &mdash; true score {p.label:.2f}"
        parts.append(_figure(png, f"explanation {i}", _esc(p.caption) + label))
    head = "Explanations" if target is None else f"{_esc(target)}: explanations"
    raises = "raises the score" if target is None else f"raises {_esc(target)}"
    lowers = "lowers the score" if target is None else f"lowers {_esc(target)}"
    return [f"<h2>{head}</h2><p class='legend'>Frames: <span style='background:#1b7837'>{raises}"
            f"</span> <span style='background:#c51b7d'>{lowers}</span>, width proportional to "
            "|contribution|.</p>" + "".join(parts)]


def write_html_report(
    out_dir: str | os.PathLike[str],
    *,
    title: str = "SIAM report",
    model: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    attributes: Sequence[str] | None = None,
    templates: Any | None = None,
    template_effect: Any | None = None,
    ranking: Mapping[str, Any] | None = None,
    cooccurrence: Mapping[str, Any] | None = None,
    panels: Sequence[ReportPanel] = (),
    disagreement: Sequence[ReportPanel] = (),
    faithfulness: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    figures_only: bool = False,
    target_sections: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write the report; every argument is optional and a missing piece is said in the page.

    Args:
        model: identity of the model (:func:`~siam.explain.explanation.model_identity`).
        metrics: ``{model: {metric: value}}`` or ``{metric: value}``.
        attributes, templates: names and effective templates (K, m, m) for Fig. 4;
            ``template_effect`` (K,) orders them (default: template mean).
        ranking: :func:`~siam.explain.summary.attribute_ranking`; cooccurrence:
            :func:`~siam.explain.summary.cooccurrence` (Fig. 3).
        panels: explanation panels (e.g. the largest errors); disagreement: panels with baseline
            results for images where SIAM and the baseline disagree most (Sec. 4.3).
        faithfulness: :func:`~siam.explain.faithfulness.faithfulness`.
        figures_only: write the figures and data but not ``report.html`` (``siam figures``).
        target_sections: a model with several targets: one ``{name, templates, template_effect,
            ranking, panels}`` per target instead of ``templates``/``template_effect``/``ranking``/
            ``panels``; each target gets its own sections and files (``*_<target>.png``,
            ``templates_<target>.npz``, ``report_data.json["targets"]``).

    Returns the path of ``report.html`` (or of the folder with ``figures_only``).
    """
    from siam.explain import figures as F

    if any(p.baseline is None for p in disagreement):
        raise ValueError("every disagreement panel needs its baseline result (ReportPanel.baseline)")
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    # Caveats of the explanations themselves (e.g. a synthetic-trained model on photographs), once each.
    every_panel = [*panels, *disagreement, *(p for ts in target_sections for p in ts.get("panels", ()))]
    warnings = list(dict.fromkeys(p.explanation.note for p in every_panel if p.explanation.note))
    data: dict[str, Any] = {"title": title, "model": model, "metrics": metrics, "notes": list(notes),
                            "warnings": warnings}
    sections: list[str] = []
    missing: list[str] = list(notes)

    def put(name: str, fig: Any) -> bytes:
        png = F.figure_png(fig)
        (out / "figures" / f"{name}.png").write_bytes(png)
        return png

    if metrics:
        sections.append("<h2>Metrics</h2>" + _metrics_table(metrics))
    else:
        missing.append("no metrics were given (the checkpoint records none and no labelled data was used)")

    cooc: list[str] = []
    if cooccurrence is not None:
        png = put("cooccurrence", F.plot_cooccurrence(dict(cooccurrence)))
        what = "the labelled score" if target_sections else "scenicness"
        cooc.append(f"<h2>Attributes and {what} (Fig. 3)</h2>" + _figure(
            png, "co-occurrence", f"Mean attribute presence in each {what} bracket (n = images per bracket)."))
    else:
        missing.append("no co-occurrence plot (it needs labelled data: --data)")
    if target_sections:
        if templates is not None or ranking is not None or panels:
            raise ValueError("give the templates, ranking and panels either once (one target) or per target "
                             "(target_sections), not both")
        data["targets"] = []
        for ts in target_sections:
            name = str(ts["name"])
            slug = "_" + target_slug(name)
            data["targets"].append({"name": name})
            sections.extend(_templates_section(out, put, ts.get("templates"), attributes, ts.get("template_effect"),
                                               slug=slug, target=name))
            sections.extend(_ranking_section(put, data["targets"][-1], ts.get("ranking"), missing, slug=slug,
                                             target=name))
            sections.extend(_panels_section(out, put, data["targets"][-1], ts.get("panels", ()), slug=slug,
                                            target=name))
        sections.extend(cooc)
    else:
        sections.extend(_templates_section(out, put, templates, attributes, template_effect))
        sections.extend(_ranking_section(put, data, ranking, missing))
        sections.extend(cooc)
        sections.extend(_panels_section(out, put, data, panels))
    if cooccurrence is not None:
        data["cooccurrence"] = cooccurrence

    if disagreement:
        data["disagreement"] = _save_panels(out, "disagreement", disagreement)
        png = put("disagreement", F.plot_disagreement(
            [(p.explanation, p.image, p.baseline) for p in disagreement],  # type: ignore[misc]
            labels=[p.label for p in disagreement]))
        sections.append("<h2>Where SIAM and the baseline disagree (Sec. 4.3)</h2>" + _figure(
            png, "disagreement", "The images with the largest |SIAM score - baseline score|."))

    if faithfulness is not None:
        data["faithfulness"] = faithfulness
        png = put("faithfulness", F.plot_faithfulness(dict(faithfulness)))
        rows = [[m, *(faithfulness[b]["auc"][m] if b in faithfulness else None for b in ("deletion", "insertion")),
                 *(faithfulness[b]["auc_vs_random"][m] if b in faithfulness else None for b in ("deletion", "insertion"))]
                for m in faithfulness["methods"]]
        sections.append(
            "<h2>Faithfulness</h2>" + _figure(
                png, "faithfulness curves",
                f"Cells of the {faithfulness['grid']}x{faithfulness['grid']} grid removed (deletion: higher AUC "
                f"is better) or revealed (insertion: lower is better) in each method's order, filled with "
                f"{_esc(faithfulness['fill'])}; {faithfulness['n_images']} images.")
            + _table(rows, ["method", "deletion AUC", "insertion AUC", "deletion / random", "insertion / random"]))
    else:
        missing.append("no faithfulness curves (they need images and --faithfulness-images > 0)")

    (out / "report_data.json").write_text(json.dumps(_finite(data), indent=2, default=_json_default, allow_nan=False) + "\n")
    if figures_only:
        return out
    ident = ""
    if model:
        ident = "<p class='sub'>" + ", ".join(f"{_esc(k)}: <code>{_esc(v)}</code>" for k, v in model.items()) + "</p>"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body, nav = _anchor_sections("".join(sections))
    notes_html = "".join(f"<p class='warning' role='note'>{_esc(w)}</p>" for w in warnings)
    notes_html += "".join(f"<p class='note'>{_esc(n)}</p>" for n in missing)
    page = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><p class='sub'>Semantically Interpretable Activation Maps: what the model saw, "
        f"where, and how much it mattered. Generated {stamp}.</p>{ident}{nav}{notes_html}{body}"
        "<h2>Data</h2><p>Every figure is drawn from data saved next to this page: <code>report_data.json</code>, "
        "<code>templates.npz</code>, <code>panels/*.npz</code>, <code>figures/*.png</code>.</p></body></html>\n"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _anchor_sections(body: str) -> tuple[str, str]:
    """Give each ``<h2>`` an id; return (body, a table of contents linking to them)."""
    links = []

    def number(m: re.Match[str]) -> str:
        i = len(links)
        links.append(f"<a href='#s{i}'>{m.group(1)}</a>")
        return f"<h2 id='s{i}'>{m.group(1)}</h2>"

    body = re.sub(r"<h2>(.*?)</h2>", number, body)
    return body, ("<nav>" + " &middot; ".join(links) + "</nav>" if links else "")


def _finite(o: Any) -> Any:
    """``o`` with NaN / infinity replaced by None, so the file is strict JSON."""
    if isinstance(o, float) or isinstance(o, np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, Mapping):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


# --- computing the pieces -----------------------------------------------------------------------

def _open(expl: Explanation, max_megapixels: float) -> Image.Image | None:
    """The original image of ``expl`` (its ``image`` is a path), or None."""
    from siam.data.images import load_image

    try:
        return load_image(expl.image, max_megapixels=max_megapixels) if expl.image else None
    except ValueError:
        return None


def _panel(explained: ExplainedSet, i: int, caption: str, max_megapixels: float) -> ReportPanel:
    e = explained.explanations[i]
    return ReportPanel(
        explanation=e, image=_open(e, max_megapixels),
        baseline=None if explained.baselines is None else explained.baselines[i],
        label=None if explained.labels is None else float(explained.labels[i]), caption=caption)


def _target_pieces(explained: ExplainedSet, n_panels: int, max_megapixels: float, *,
                   target: str | None) -> dict[str, Any]:
    """The template effect, ranking and panels of the target ``explained`` shows. Panels: the
    largest |SIAM - label| errors when labelled (one target), else the highest and lowest scores."""
    from siam.explain.summary import attribute_ranking, largest_errors

    c = explained.contributions  # (N, K)
    out: dict[str, Any] = {"template_effect": c.mean(0), "ranking": attribute_ranking(c, explained.attributes)}
    scores, n = explained.scores, len(explained)
    what = "SIAM" if target is None else f"SIAM {target}"

    def name(i: int) -> str:
        return os.path.basename(str(explained.explanations[i].image))

    if explained.labels is not None and target is None:
        idx = largest_errors(scores, explained.labels, min(n_panels, n))
        out["panels"] = [_panel(explained, i, f"{name(i)}: {what} {scores[i]:.2f}, error "
                                f"{scores[i] - explained.labels[i]:+.2f}", max_megapixels) for i in idx]
    else:
        order = np.argsort(-scores, kind="stable")
        half = max(1, n_panels // 2)
        idx = list(dict.fromkeys([*order[:half].tolist(), *order[::-1][: n_panels - half].tolist()]))[:n_panels]
        out["panels"] = [_panel(explained, i, f"{name(i)}: {what} {scores[i]:.2f}", max_megapixels) for i in idx]
    return out


def model_report_inputs(
    model: SIAM,
    explained: ExplainedSet | None = None,
    *,
    baseline: Baseline | None = None,
    n_panels: int = 4,
    faithfulness_images: int = 8,
    faithfulness_steps: int = 10,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> dict[str, Any]:
    """Keyword arguments for :func:`write_html_report` from a model and explained images.

    Panels: the largest |SIAM - label| errors when ``explained.labels`` is set, else the highest and
    lowest scores. Disagreement: the largest |SIAM - baseline| (needs baselines). Faithfulness: on
    the first ``faithfulness_images`` explained images (0 to skip). A model with several targets
    gets ``target_sections`` (templates, ranking and panels, highest and lowest, per target);
    labels, disagreement and faithfulness are about its first target.
    """
    import torch

    from siam.data.transforms import eval_transform
    from siam.explain.faithfulness import faithfulness
    from siam.explain.summary import cooccurrence, most_disagreeing

    several = len(model.targets) > 1
    with torch.no_grad():
        templates = [model.effective_templates(t).cpu().numpy() for t in range(len(model.targets))]  # T x (K, m, m)
    kw: dict[str, Any] = {"attributes": list(model.attributes)}
    per_target: list[dict[str, Any]] = [{"name": name, "templates": templates[t]} for t, name in enumerate(model.targets)]
    if explained is not None and len(explained) > 0:
        for t, section in enumerate(per_target):
            section.update(_target_pieces(explained.for_target(t), n_panels, max_megapixels,
                                          target=model.targets[t] if several else None))
        if explained.labels is not None:
            kw["cooccurrence"] = cooccurrence(explained.presence, explained.labels, model.attributes)
    if several:
        kw["target_sections"] = per_target
    else:
        kw.update({k: v for k, v in per_target[0].items() if k != "name"})
    if explained is None or len(explained) == 0:
        return kw
    n = len(explained)
    scores = explained.scores
    base_scores = explained.baseline_scores
    if base_scores is not None:
        idx = most_disagreeing(scores, base_scores, min(n_panels, n))
        kw["disagreement"] = [_panel(explained, i, "", max_megapixels) for i in idx]
    if faithfulness_images > 0:
        tf = eval_transform(model.preprocessing)
        xs = []
        for e in explained.explanations:
            image = _open(e, max_megapixels)
            if image is not None:
                xs.append(tf(image))
            if len(xs) == faithfulness_images:
                break
        if xs:
            kw["faithfulness"] = faithfulness(model, torch.stack(xs), baseline=baseline, steps=faithfulness_steps)
    return kw


# --- CLI ----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--faithfulness-images", type=int, default=8, metavar="N",
                        help="images for the faithfulness curves (0: skip; default 8)")
    parser.add_argument("--faithfulness-steps", type=int, default=10, metavar="S",
                        help="deletion/insertion steps (default 10)")
    parser.add_argument("--title", default="SIAM report", help="page title")


def run(args: argparse.Namespace) -> int:
    if args.faithfulness_images < 0 or args.faithfulness_steps < 1:
        raise ValueError("--faithfulness-images must be >= 0 and --faithfulness-steps >= 1, got "
                         f"{args.faithfulness_images} and {args.faithfulness_steps}")
    model, ident, baseline, explained, notes, metrics = collect(args)
    kw = model_report_inputs(model, explained, baseline=baseline, n_panels=args.panels,
                             faithfulness_images=args.faithfulness_images,
                             faithfulness_steps=args.faithfulness_steps, max_megapixels=args.max_megapixels)
    path = write_html_report(args.out, title=args.title, model=ident, metrics=metrics, notes=notes, **kw)
    print(f"siam report: wrote {path}", file=sys.stderr)
    return 1 if explained is not None and explained.failures else 0
