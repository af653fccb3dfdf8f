"""Interventions are exact: each is checked against g run again on edited attribute maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from siam.data.transforms import eval_transform
from siam.explain import explain

from .conftest import NAMES


@pytest.fixture()
def setup(model, image):
    expl = explain(model, image)
    with torch.no_grad():
        out = model(eval_transform(model.preprocessing)(image)[None])
    return model, expl, out


def _g(model, maps: torch.Tensor) -> float:
    """Score of g on (K, m, m) attribute maps."""
    with torch.no_grad():
        return float(model.template_head(maps[None])["score"][0])


def test_remove_matches_zeroed_map(setup) -> None:
    model, expl, out = setup
    maps = out.maps[0].clone()
    i = NAMES.index("road")
    maps[i] = 0
    res = expl.intervene(remove=["road"])
    assert res.score == pytest.approx(_g(model, maps), abs=1e-5)
    assert res.score == pytest.approx(expl.score - float(expl.contributions[i]), abs=1e-6)
    assert res.changes == [{"name": "road", "before": pytest.approx(float(expl.contributions[i])),
                            "after": 0.0, "change": pytest.approx(-float(expl.contributions[i]))}]
    assert res.delta == pytest.approx(res.score - res.original_score)


def test_scale_matches_scaled_map(setup) -> None:
    model, expl, out = setup
    maps = out.maps[0].clone()
    maps[NAMES.index("ocean")] *= 0.5
    maps[NAMES.index("trees")] *= 3.0
    res = expl.intervene(scale={"ocean": 0.5, "trees": 3.0})
    assert res.score == pytest.approx(_g(model, maps), abs=1e-5)


def test_remove_region_on_whole_cells(setup) -> None:
    """The crop box of a 96x80 image at resize 72 / crop 64 is (5.33, 4.44, 90.67, 75.56); a region
    that covers exactly the top-left 3x2 cells removes exactly those cells."""
    model, expl, out = setup
    x0, y0, x1, y1 = expl.crop_box
    cw, ch = (x1 - x0) / 8, (y1 - y0) / 8
    region = (x0 - 50, y0 - 50, x0 + 3 * cw, y0 + 2 * ch)  # also reaches outside the crop: ignored
    maps = out.maps[0].clone()
    i = NAMES.index("clouds")
    maps[i, :2, :3] = 0
    res = expl.intervene(remove_region={"clouds": region})
    assert res.score == pytest.approx(_g(model, maps), abs=1e-5)
    assert res.request["remove_region"] == {"clouds": [float(v) for v in region]}


def test_remove_region_area_weighted(setup) -> None:
    model, expl, out = setup
    x0, y0, x1, y1 = expl.crop_box
    cw, ch = (x1 - x0) / 8, (y1 - y0) / 8
    # half of cell column 4 and a quarter of row 6 -> weights 0.5 x 0.25 on one cell
    region = (x0 + 4.5 * cw, y0 + 6.75 * ch, x0 + 5 * cw, y0 + 7 * ch)
    maps = out.maps[0].clone()
    i = NAMES.index("grass")
    maps[i, 6, 4] *= 1 - 0.5 * 0.25
    res = expl.intervene(remove_region={"grass": region})
    assert res.score == pytest.approx(_g(model, maps), abs=1e-5)


def test_top_k_and_combination(setup) -> None:
    _, expl, _ = setup
    c = expl.contributions.astype(np.float64)
    keep = np.argsort(-np.abs(c))[:2]
    manual = expl.bias + c[keep].sum()
    assert expl.intervene(top_k=2).score == pytest.approx(manual, abs=1e-5)
    assert expl.intervene(top_k=0).score == pytest.approx(expl.bias, abs=1e-5)
    assert expl.intervene(top_k=len(NAMES)).delta == 0.0
    # order: scale, then remove, then top-k on the result
    edited = c.copy()
    edited[NAMES.index("trees")] *= 10.0
    edited[NAMES.index("road")] = 0.0
    keep = np.argsort(-np.abs(edited))[:3]
    res = expl.intervene(scale={"trees": 10.0}, remove=["road"], top_k=3)
    assert res.score == pytest.approx(expl.bias + edited[keep].sum(), abs=1e-5)
    np.testing.assert_allclose(res.contributions[keep], edited[keep])


def test_no_intervention_changes_nothing(setup) -> None:
    _, expl, _ = setup
    res = expl.intervene()
    assert res.score == expl.score and res.delta == 0.0 and res.changes == []


def test_intervention_json_identity(setup) -> None:
    _, expl, _ = setup
    res = expl.intervene(remove=["ocean"], scale={"grass": -1.0}, top_k=4)
    d = json.loads(json.dumps(res.to_json()))
    assert set(d) == {"request", "score", "original_score", "delta", "changes", "contributions"}
    total = expl.bias + sum(a["contribution"] for a in d["contributions"])
    assert d["score"] == pytest.approx(total, abs=1e-5)
    assert [a["name"] for a in d["contributions"]] == list(NAMES)
    assert all(ch["change"] != 0 for ch in d["changes"])
    assert sorted(abs(ch["change"]) for ch in d["changes"])[::-1] == [abs(ch["change"]) for ch in d["changes"]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"remove": ["sky"]}, r"unknown attribute\(s\) \['sky'\]; allowed: \['trees', 'road'"),
        ({"scale": {"Trees": 2.0}}, "unknown attribute"),
        ({"remove_region": {"mountain": (0, 0, 1, 1)}}, "unknown attribute"),
        ({"scale": {"trees": float("nan")}}, "finite"),
        ({"remove_region": {"road": (10, 0, 5, 5)}}, "x0 < x1"),
        ({"remove_region": {"road": (0, 0, 5)}}, "4 numbers"),
        ({"remove_region": {"road": (500, 500, 600, 600)}}, "outside the 96x80 image"),
        ({"top_k": -1}, "non-negative integer"),
    ],
)
def test_bad_interventions(setup, kwargs, match) -> None:
    _, expl, _ = setup
    with pytest.raises(ValueError, match=match):
        expl.intervene(**kwargs)
