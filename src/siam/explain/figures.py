"""Figures (the only matplotlib importer; Agg, no pyplot, so it is safe in a web server).

Every figure is drawn from data that is also saved (explanation JSON/NPZ, the dicts of
:mod:`siam.explain.summary` and :mod:`siam.explain.faithfulness`):

* :func:`plot_explanation`: one image in the style of the paper's Figs. 5-7;
* :func:`plot_templates`: the K effective templates (Fig. 4);
* :func:`plot_cooccurrence`: presence against scenicness brackets (Fig. 3);
* :func:`plot_disagreement`: images where SIAM and the baseline disagree most (Sec. 4.3);
* :func:`plot_ranking`, :func:`plot_faithfulness`;
* :func:`render_overlay_png`: a map over the image as PNG bytes (for the web service).

Colours: green raises the score, magenta lowers it, on one symmetric range per figure.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from siam.explain.explanation import BaselineResult, Explanation  # noqa: E402
from siam.explain.summary import template_order  # noqa: E402

__all__ = [
    "GREEN",
    "MAGENTA",
    "DIVERGING",
    "plot_explanation",
    "plot_templates",
    "plot_cooccurrence",
    "plot_disagreement",
    "plot_ranking",
    "plot_faithfulness",
    "render_overlay_png",
    "save_figure",
    "figure_png",
]

GREEN = "#1b7837"
MAGENTA = "#c51b7d"
NOTE_COLOUR = "#a04000"  # caveats drawn on a figure (e.g. a synthetic-trained model on a photograph)
#: Diverging magenta (lowers the score) - white - green (raises it).
DIVERGING = LinearSegmentedColormap.from_list("siam_magenta_white_green", [MAGENTA, "#ffffff", GREEN])
PRESENCE = colormaps["inferno"]
DISPLAY_SIDE = 768  # images are downscaled to this side for drawing (coordinates stay original)
PANEL_SIDE = 320  # ... and to this side inside map panels
MAX_FRAME = 9.0  # frame width (points) of the attribute with the largest |contribution|

ImageLike = Image.Image | np.ndarray | None


# --- small helpers -------------------------------------------------------------------------------

def _vmax(*arrays: np.ndarray) -> float:
    v = max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return v if v > 0 else 1.0


def _display(image: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 array for drawing, at most DISPLAY_SIDE a side; a grey canvas when ``image`` is None."""
    if image is None:
        w, h = size
        s = min(1.0, DISPLAY_SIDE / max(w, h))
        return np.full((max(1, round(h * s)), max(1, round(w * s)), 3), 200, np.uint8)
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil = pil.convert("RGB")
    if max(pil.size) > DISPLAY_SIDE:
        pil = pil.copy()
        pil.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _rgba(values: np.ndarray, vmax: float, *, signed: bool, alpha: float = 0.75) -> np.ndarray:
    """(m, m, 4) float colours; opacity grows with |value| so the image shows where nothing is."""
    if signed:
        rgba = DIVERGING(np.clip(values / (2 * vmax) + 0.5, 0, 1))
    else:
        rgba = PRESENCE(np.clip(values / vmax, 0, 1))
    rgba[..., 3] = alpha * np.clip(np.abs(values) / vmax, 0, 1)
    return rgba


def _crop(image: np.ndarray, size: tuple[int, int], box: Sequence[float], *, side: int = PANEL_SIDE) -> np.ndarray:
    """The part of the display ``image`` under ``box`` (original pixels), at most ``side`` a side."""
    w, h = size
    sy, sx = image.shape[0] / h, image.shape[1] / w
    x0, y0, x1, y1 = box
    pil = Image.fromarray(image).crop((round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)))
    pil.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _show_map(
    ax: Any, crop: np.ndarray, box: Sequence[float], values: np.ndarray, vmax: float, *, signed: bool,
    grey: bool = False,
) -> None:
    """``crop`` (the image under ``box``, :func:`_crop`) with ``values`` over it, in original pixels."""
    x0, y0, x1, y1 = box
    shown = crop.mean(-1, keepdims=True).repeat(3, -1).astype(np.uint8) if grey else crop
    ax.imshow(shown, extent=(x0, x1, y1, y0), interpolation="bilinear")
    ax.imshow(_rgba(values, vmax, signed=signed), extent=(x0, x1, y1, y0), interpolation="bilinear")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_xticks([])
    ax.set_yticks([])


def _label(ax: Any, text: str, *, fontsize: float = 8) -> None:
    ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", ha="left", fontsize=fontsize,
            bbox={"facecolor": "white", "alpha": 0.85, "linewidth": 0, "pad": 2})


def _frame(ax: Any, contribution: float, cmax: float) -> None:
    """Green frame when c > 0, magenta when c < 0, width proportional to |c|."""
    colour = GREEN if contribution > 0 else MAGENTA if contribution < 0 else "#999999"
    width = 0.5 + MAX_FRAME * abs(contribution) / cmax if cmax > 0 else 0.5
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def _attribute_panels(axes: Sequence[Any], expl: Explanation, image: np.ndarray) -> None:
    """The attribute maps with the largest |c_i|, framed and labelled (Figs. 5-7)."""
    idx = [int(i) for i in np.argsort(expl.ranks())[: len(axes)]]
    vmax = _vmax(*(expl.maps[i] for i in idx))
    cmax = float(np.abs(expl.contributions).max()) if expl.contributions.size else 0.0
    crop = _crop(image, expl.image_size, expl.crop_box)
    for ax, i in zip(axes, idx):
        _show_map(ax, crop, expl.crop_box, expl.maps[i], vmax, signed=False, grey=True)
        c = float(expl.contributions[i])
        _frame(ax, c, cmax)
        _label(ax, f"{expl.attributes[i]}\n{c:+.3f}  (p={expl.presence[i]:.2f})")
    for ax in axes[len(idx):]:
        ax.set_axis_off()


def _input_panel(ax: Any, image: np.ndarray, expl: Explanation, title: str) -> None:
    w, h = expl.image_size
    ax.imshow(image, extent=(0, w, h, 0), interpolation="bilinear")
    x0, y0, x1, y1 = expl.crop_box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linestyle="--", lw=1.2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _total_panel(ax: Any, image: np.ndarray, expl: Explanation) -> None:
    total = expl.total_map()
    _show_map(ax, _crop(image, expl.image_size, expl.crop_box, side=DISPLAY_SIDE // 2), expl.crop_box, total,
              _vmax(total), signed=True)
    what = f"{expl.target} " if expl.several_targets else "score "
    ax.set_title(f"SIAM total contribution\n{what}{expl.score:.2f} = bias {expl.bias:.2f} "
                 f"{expl.score - expl.bias:+.2f}", fontsize=9)


def _baseline_panel(ax: Any, image: np.ndarray, expl: Explanation, base: BaselineResult) -> None:
    evidence = (base.cam - base.bias) / base.cam.size  # (h, w); sums to score - bias
    _show_map(ax, _crop(image, expl.image_size, base.crop_box, side=DISPLAY_SIDE // 2), base.crop_box, evidence,
              _vmax(evidence), signed=True)
    ax.set_title(f"baseline CAM\nscore {base.score:.2f} = bias {base.bias:.2f} "
                 f"{base.score - base.bias:+.2f}", fontsize=9)


def _aspect(box: Sequence[float]) -> float:
    """Height / width of a panel showing ``box``, kept within [0.4, 2]."""
    w, h = box[2] - box[0], box[3] - box[1]
    return float(np.clip(h / w, 0.4, 2.0)) if w > 0 else 1.0


def _name(expl: Explanation) -> str:
    return os.path.basename(expl.image) if expl.image else "image"


# --- per-image figure ----------------------------------------------------------------------------

def plot_explanation(
    expl: Explanation,
    image: ImageLike = None,
    *,
    baseline: BaselineResult | None = None,
    n: int = 8,
    title: str | None = None,
) -> Figure:
    """The paper's Figs. 5-7 for one image.

    Top row: the input (dashed: the crop the model sees), the total contribution map
    sum_i E_i * A_i over it, the baseline's CAM when given, and the numbers. Below: the ``n``
    attribute maps A_i with the largest |c_i|, framed green (raises the score) or magenta (lowers
    it), frame width proportional to |c_i|, with name, c_i and presence. ``image`` is the original
    RGB image (PIL or array); None draws the maps on grey. A model with several targets: the
    figure is about ``expl.target`` (named on it; ``expl.for_target(t)`` for another).
    """
    n = max(0, min(int(n), len(expl.attributes)))
    ncols = 4
    rows = 1 + math.ceil(n / ncols)
    fig = Figure(figsize=(3.2 * ncols, (3.2 * _aspect(expl.crop_box) + 0.5) * rows), layout="constrained")
    gs = fig.add_gridspec(rows, ncols)
    img = _display(image, expl.image_size)
    _input_panel(fig.add_subplot(gs[0, 0]), img, expl, _name(expl))
    _total_panel(fig.add_subplot(gs[0, 1]), img, expl)
    if baseline is not None:
        _baseline_panel(fig.add_subplot(gs[0, 2]), img, expl, baseline)
        text_ax = fig.add_subplot(gs[0, 3])
    else:
        text_ax = fig.add_subplot(gs[0, 2:])
    text_ax.set_axis_off()
    lines = [f"score {expl.score:.3f}", f"bias {expl.bias:.3f}"]
    if expl.several_targets:  # which target this figure shows, and the others' scores
        lines = [f"target {expl.target}", *lines, "other targets: " + ", ".join(
            f"{t} {s:.3f}" for t, s in zip(expl.targets, expl.all_scores) if t != expl.target)]
    if baseline is not None:
        lines.append(f"baseline {baseline.score:.3f}")
    lines.append("raises the score:")
    lines += [f"  {e['name']} {e['contribution']:+.3f}" for e in expl.top_positive()] or ["  (none)"]
    lines.append("lowers the score:")
    lines += [f"  {e['name']} {e['contribution']:+.3f}" for e in expl.top_negative()] or ["  (none)"]
    text_ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", fontsize=9, family="monospace",
                 transform=text_ax.transAxes)
    axes = [fig.add_subplot(gs[1 + j // ncols, j % ncols]) for j in range(n)]
    _attribute_panels(axes, expl, img)
    if expl.note:  # e.g. a synthetic-trained model on a photograph: say so on the figure itself
        heading = "\n".join(textwrap.wrap(f"NOTE: {expl.note}", width=30 * ncols))
        fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10, color=NOTE_COLOUR,
                     fontweight="bold")
    elif title:
        fig.suptitle(title, fontsize=11)
    return fig


def render_overlay_png(
    explanation: Explanation,
    image: Image.Image | np.ndarray,
    attribute: str | None = None,
    *,
    what: Literal["contribution", "attribute"] = "contribution",
    max_side: int = 768,
) -> bytes:
    """PNG bytes: ``image`` (at most ``max_side``) with a map over the crop the model saw.

    ``attribute=None``: the total contribution map; otherwise that attribute's contribution map
    E_i * A_i (``what="contribution"``, green/magenta) or its attribute map A_i (``"attribute"``).
    """
    if what not in ("contribution", "attribute"):
        raise ValueError(f"what must be 'contribution' or 'attribute', got {what!r}")
    if attribute is None:
        if what == "attribute":
            raise ValueError("what='attribute' needs an attribute name")
        values = explanation.total_map()
    else:
        i = explanation.index(attribute)
        values = explanation.contribution_maps[i] if what == "contribution" else explanation.maps[i]
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pil = pil.convert("RGB")
    w, h = explanation.image_size
    if pil.size != (w, h):
        raise ValueError(f"image is {pil.size[0]}x{pil.size[1]}, but the explanation is of a {w}x{h} image")
    s = min(1.0, max_side / max(w, h))
    base = pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR).convert("RGBA")
    x0, y0, x1, y1 = (v * s for v in explanation.crop_box)
    rgba = (_rgba(values, _vmax(values), signed=what == "contribution") * 255).astype(np.uint8)
    over = Image.fromarray(rgba, mode="RGBA").resize(
        (max(1, round(x1 - x0)), max(1, round(y1 - y0))), Image.Resampling.BILINEAR
    )
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    layer.paste(over, (round(x0), round(y0)))
    buf = io.BytesIO()
    Image.alpha_composite(base, layer).convert("RGB").save(buf, format="PNG", compress_level=1)  # 4x faster encode, similar size
    return buf.getvalue()


# --- model-level figures -------------------------------------------------------------------------

def plot_templates(
    templates: Any, attributes: Sequence[str], *, effect: Any | None = None, ncols: int | None = None
) -> Figure:
    """Fig. 4: the K effective templates E_i (K, m, m), one symmetric green-white-magenta range,
    named, ordered from the most positive to the most negative mean effect
    (:func:`~siam.explain.summary.template_order`)."""
    t = np.asarray(templates, dtype=np.float64)
    names = list(attributes)
    if t.ndim != 3 or t.shape[0] != len(names):
        raise ValueError(f"templates must be (K={len(names)}, m, m), got {t.shape}")
    order = template_order(t, effect)
    eff = t.mean((1, 2)) if effect is None else np.asarray(effect, dtype=np.float64)
    k = len(names)
    ncols = ncols or max(1, min(k, math.ceil(math.sqrt(k * 1.6))))
    rows = math.ceil(k / ncols)
    fig = Figure(figsize=(1.9 * ncols + 1.0, 2.0 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, ncols, squeeze=False)
    vmax = _vmax(t)
    im = None
    for ax, i in zip(axes.flat, order):
        im = ax.imshow(t[i], cmap=DIVERGING, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{names[i]}\n{eff[i]:+.2g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[k:]:
        ax.set_axis_off()
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="template weight (green raises the score)")
    fig.suptitle("Effective templates E_i, ordered by mean effect", fontsize=11)
    return fig


def plot_ranking(ranking: dict[str, Any], *, n: int | None = None) -> Figure:
    """Bars: mean |c_i| per attribute (from :func:`~siam.explain.summary.attribute_ranking`),
    coloured by the sign of the mean effect; dots: the signed mean."""
    rows = ranking["attributes"][: n or None]
    if not rows:
        raise ValueError("ranking has no attributes to plot")
    fig = Figure(figsize=(7, 0.28 * len(rows) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    colours = [GREEN if r["mean"] > 0 else MAGENTA if r["mean"] < 0 else "#999999" for r in rows]
    ax.barh(y, [r["mean_abs"] for r in rows], color=colours, alpha=0.8, label="mean |contribution|")
    ax.scatter([r["mean"] for r in rows], y, color="black", s=12, zorder=3, label="mean contribution")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("contribution to the score")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Attribute ranking over {ranking.get('n_images', '?')} images "
                 "(green: raises the score on average, magenta: lowers it)", fontsize=9)
    return fig


def plot_cooccurrence(cooc: dict[str, Any]) -> Figure:
    """Fig. 3: mean attribute presence (rows, ordered by correlation with the score) per
    scenicness bracket (columns), from :func:`~siam.explain.summary.cooccurrence`."""
    names = cooc["attributes"]
    order = [names.index(a) for a in cooc["order"]]
    mean = np.array([[np.nan if v is None else v for v in cooc["mean_presence"][i]] for i in order], dtype=float)
    corr = [cooc["correlation"][i] for i in order]
    fig = Figure(figsize=(0.6 * mean.shape[1] + 3.5, 0.26 * len(order) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    vmax = float(np.nanmax(mean)) if np.isfinite(mean).any() and np.nanmax(mean) > 0 else 1.0
    im = ax.imshow(np.ma.masked_invalid(mean), cmap="Greens", vmin=0, vmax=vmax, aspect="auto")
    ax.set_xticks(range(mean.shape[1]), [f"{lab}\n(n={c})" for lab, c in zip(cooc["labels"], cooc["counts"])],
                  fontsize=7)
    ax.set_yticks(range(len(order)),
                  [f"{names[i]} (r={'n/a' if r is None else f'{r:+.2f}'})" for i, r in zip(order, corr)], fontsize=7)
    ax.set_xlabel("scenicness bracket")
    fig.colorbar(im, ax=ax, shrink=0.7, label="mean presence")
    ax.set_title("Attribute presence by scenicness (r: correlation with the score)", fontsize=9)
    return fig


def plot_disagreement(
    panels: Sequence[tuple[Explanation, ImageLike, BaselineResult]],
    *,
    labels: Sequence[float | None] | None = None,
    n_attributes: int = 3,
) -> Figure:
    """Sec. 4.3: one row per image, input | SIAM total map | baseline CAM | the top attribute maps.
    ``labels``: the true score per row (or None)."""
    if not panels:
        raise ValueError("no images to show")
    ncols = 3 + n_attributes
    heights = [2.6 * _aspect(expl.crop_box) + 0.6 for expl, _, _ in panels]
    fig = Figure(figsize=(2.6 * ncols, sum(heights) + 0.4), layout="constrained")
    axes = fig.subplots(len(panels), ncols, squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (expl, image, base) in enumerate(panels):
        img = _display(image, expl.image_size)
        truth = None if labels is None else labels[r]
        head = _name(expl) + ("" if truth is None else f"\ntrue score {truth:.2f}")
        _input_panel(axes[r, 0], img, expl, head)
        _total_panel(axes[r, 1], img, expl)
        _baseline_panel(axes[r, 2], img, expl, base)
        _attribute_panels(list(axes[r, 3:]), expl, img)
    fig.suptitle("Where SIAM and the baseline disagree most", fontsize=11)
    return fig


def plot_faithfulness(result: dict[str, Any]) -> Figure:
    """Deletion/insertion curves from :func:`~siam.explain.faithfulness.faithfulness`, AUC in the
    legend (deletion: higher is better; insertion: lower is better)."""
    benches = [b for b in ("deletion", "insertion") if b in result]
    if not benches:
        raise ValueError("result has neither 'deletion' nor 'insertion' curves")
    fig = Figure(figsize=(5.2 * len(benches), 4), layout="constrained")
    axes = fig.subplots(1, len(benches), squeeze=False)[0]
    styles = {"siam": (GREEN, "-"), "siam_random": (GREEN, ":"), "baseline_gradcam": ("#2166ac", "-"),
              "baseline_cam_abs": ("#2166ac", "--"), "baseline_random": ("#2166ac", ":")}
    x = result["fractions"]
    for ax, bench in zip(axes, benches):
        for method, curve in result[bench]["curves"].items():
            colour, ls = styles.get(method, ("black", "-"))
            ax.plot(x, curve, color=colour, linestyle=ls, label=f"{method} (AUC {result[bench]['auc'][method]:.3g})")
        better = "higher" if result["higher_is_better"][bench] else "lower"
        ax.set_title(f"{bench} ({result['fill']}), {better} AUC is better", fontsize=9)
        ax.set_xlabel("fraction of cells " + ("removed" if bench == "deletion" else "revealed"))
        ax.set_ylabel("|score - original score|")
        ax.legend(fontsize=7)
    fig.suptitle(f"Faithfulness on {result['n_images']} images", fontsize=11)
    return fig


# --- output --------------------------------------------------------------------------------------

def figure_png(fig: Figure, *, dpi: int = 90) -> bytes:
    """Render ``fig`` to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 90) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(figure_png(fig, dpi=dpi))
    return p
