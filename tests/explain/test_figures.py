from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from siam.explain import explain, explain_baseline
from siam.explain import figures as F
from siam.explain.summary import attribute_ranking, cooccurrence

from .conftest import NAMES, make_image


@pytest.fixture()
def expl(model, image):
    return explain(model, image, name="pic.png")


def _attribute_axes(fig, names):
    """{name: axes} of the attribute panels (their label starts with the attribute name)."""
    found = {}
    for ax in fig.axes:
        for t in ax.texts:
            first = t.get_text().split("\n")[0]
            if first in names:
                found[first] = (ax, t.get_text())
    return found


def test_explanation_figure_frames_and_labels(expl, image, baseline) -> None:
    base = explain_baseline(baseline, image)
    fig = F.plot_explanation(expl, image, baseline=base, n=4)
    panels = _attribute_axes(fig, NAMES)
    top4 = [NAMES[i] for i in np.argsort(-np.abs(expl.contributions), kind="stable")[:4]]
    assert set(panels) == set(top4)
    cmax = float(np.abs(expl.contributions).max())
    for name, (ax, text) in panels.items():
        c = float(expl.contributions[NAMES.index(name)])
        spine = ax.spines["left"]
        assert to_hex(spine.get_edgecolor()) == (F.GREEN if c > 0 else F.MAGENTA)
        assert spine.get_linewidth() == pytest.approx(0.5 + F.MAX_FRAME * abs(c) / cmax)
        assert f"{c:+.3f}" in text
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert f"baseline CAM\nscore {base.score:.2f}" in titles
    assert f"score {expl.score:.2f} = bias {expl.bias:.2f}" in titles
    png = F.figure_png(fig)
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_explanation_figure_without_image_or_baseline(expl) -> None:
    fig = F.plot_explanation(expl, None)
    assert len(_attribute_axes(fig, NAMES)) == len(NAMES)  # n = min(8, K)
    assert "baseline" not in " ".join(ax.get_title() for ax in fig.axes)


def test_overlay_png(expl, image) -> None:
    png = F.render_overlay_png(expl, image)
    over = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    orig = np.asarray(image).astype(int)
    assert over.shape == orig.shape  # 96 x 80 < max_side: not resized
    x0, y0, x1, y1 = (round(v) for v in expl.crop_box)
    assert (over[:, : x0 - 1] == orig[:, : x0 - 1]).all() and (over[: y0 - 1] == orig[: y0 - 1]).all()
    assert (over[y0:y1, x0:x1] != orig[y0:y1, x0:x1]).any()
    # the cell with the largest |total contribution| is tinted green (> 0) or magenta (< 0)
    total = expl.total_map()
    r, c = np.unravel_index(np.abs(total).argmax(), total.shape)
    cw, ch = (expl.crop_box[2] - expl.crop_box[0]) / 8, (expl.crop_box[3] - expl.crop_box[1]) / 8
    px, py = int(expl.crop_box[0] + (c + 0.5) * cw), int(expl.crop_box[1] + (r + 0.5) * ch)
    dg = (over[py, px, 1] - over[py, px, 0]) - (orig[py, px, 1] - orig[py, px, 0])
    assert dg > 0 if total[r, c] > 0 else dg < 0
    small = Image.open(io.BytesIO(F.render_overlay_png(expl, image, "road", what="attribute", max_side=40)))
    assert max(small.size) == 40
    with pytest.raises(ValueError, match="unknown attribute"):
        F.render_overlay_png(expl, image, "sky")
    with pytest.raises(ValueError, match="explanation is of a 96x80 image"):
        F.render_overlay_png(expl, make_image(1, (50, 50)))
    with pytest.raises(ValueError, match="needs an attribute name"):
        F.render_overlay_png(expl, image, what="attribute")


def test_templates_figure_order_and_symmetric_range(model) -> None:
    t = model.effective_templates().detach().numpy()
    fig = F.plot_templates(t, NAMES)
    order = np.argsort(-t.mean((1, 2)), kind="stable")
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in titled] == [NAMES[i] for i in order]
    vmax = float(np.abs(t).max())
    for ax in titled:
        assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
    with pytest.raises(ValueError, match=r"\(K=5, m, m\)"):
        F.plot_templates(t[:2], NAMES)


def test_ranking_cooccurrence_faithfulness_figures() -> None:
    c = np.array([[0.5, -1.0, 0.1], [0.3, -2.0, -0.3]])
    fig = F.plot_ranking(attribute_ranking(c, ["a", "b", "c"]))
    bars = fig.axes[0].patches
    assert [to_hex(p.get_facecolor()) for p in bars] == [F.MAGENTA, F.GREEN, F.MAGENTA]  # b, a, c
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["b", "a", "c"]

    presence = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    d = cooccurrence(presence, [9.0, 2.0, 5.0], ["x", "y"], edges=(1, 4, 7, 10))
    fig = F.plot_cooccurrence(d)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown, [[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]])  # rows: x (r > 0), y

    result = {"fractions": [0, 0.5, 1], "fill": "grey", "n_images": 2, "higher_is_better": {"deletion": True},
              "deletion": {"curves": {"siam": [0, 1, 2], "siam_random": [0, 0.5, 2]},
                           "auc": {"siam": 1.0, "siam_random": 0.75}}}
    fig = F.plot_faithfulness(result)
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert labels == ["siam (AUC 1)", "siam_random (AUC 0.75)"]
    with pytest.raises(ValueError, match="neither"):
        F.plot_faithfulness({"fractions": []})


def test_disagreement_figure(model, baseline) -> None:
    images = [make_image(s, (90, 60)) for s in range(2)]
    panels = [(explain(model, im, name=f"im{i}"), im, explain_baseline(baseline, im)) for i, im in enumerate(images)]
    fig = F.plot_disagreement(panels, labels=[7.5, None], n_attributes=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert "im0\ntrue score 7.50" in titles and "im1" in titles
    assert sum(t.startswith("baseline CAM") for t in titles) == 2
    with pytest.raises(ValueError, match="no images"):
        F.plot_disagreement([])


def test_only_figures_imports_matplotlib() -> None:
    """Source check: matplotlib appears only in figures.py; other modules import figures lazily
    (inside functions), so computing explanations never loads matplotlib."""
    import ast
    from pathlib import Path

    import siam.explain

    for path in Path(siam.explain.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] == "matplotlib" for m in mods):
                    assert path.name == "figures.py", f"{path.name} imports matplotlib"
        for node in tree.body:  # module level
            if isinstance(node, ast.ImportFrom) and node.module == "siam.explain.figures":
                raise AssertionError(f"{path.name} imports figures at module level")
            if isinstance(node, ast.ImportFrom) and node.module == "siam.explain" and any(
                    a.name == "figures" for a in node.names):
                raise AssertionError(f"{path.name} imports figures at module level")
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"
