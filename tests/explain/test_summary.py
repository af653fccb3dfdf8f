from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from siam.explain.summary import attribute_ranking, cooccurrence, largest_errors, most_disagreeing, template_order


def test_attribute_ranking_hand_computed() -> None:
    c = np.array([[1.0, -3.0, 0.0], [3.0, 2.0, 0.0]])
    r = attribute_ranking(c, ["a", "b", "c"])
    assert r["order"] == ["b", "a", "c"]  # mean |c|: 2.5, 2, 0
    rows = {x["name"]: x for x in r["attributes"]}
    assert rows["a"] == {"name": "a", "mean_abs": 2.0, "mean": 2.0, "sign": 1, "share_positive": 1.0}
    assert rows["b"]["mean"] == -0.5 and rows["b"]["sign"] == -1 and rows["b"]["share_positive"] == 0.5
    assert attribute_ranking(np.array([[1.0, -1.0]]), ["p", "q"])["order"] == ["p", "q"]  # ties keep order
    assert rows["c"]["sign"] == 0
    with pytest.raises(ValueError, match=r"\(N, K=3\)"):
        attribute_ranking(np.zeros((2, 4)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty"):
        attribute_ranking(np.zeros((0, 3)), ["a", "b", "c"])


def test_cooccurrence_hand_computed() -> None:
    presence = np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 1.0], [0.2, 0.8], [0.9, 0.1]])
    scores = np.array([1.0, 2.5, 10.0, 9.2, 0.3])  # 0.3 is clipped into the first bracket
    d = cooccurrence(presence, scores, ["x", "y"], edges=(1, 4, 7, 10))
    assert d["labels"] == ["1-4", "4-7", "7-10"]
    assert d["counts"] == [3, 0, 2]  # 10.0 belongs to the last (closed) bracket
    assert d["mean_presence"][0] == [pytest.approx(0.8), None, pytest.approx(0.1)]
    assert d["mean_presence"][1] == [pytest.approx(0.1), None, pytest.approx(0.9)]
    assert d["correlation"][0] == pytest.approx(stats.pearsonr(presence[:, 0], scores)[0])
    assert d["order"] == ["y", "x"]
    const = cooccurrence(np.ones((3, 1)), [1.0, 2.0, 3.0], ["z"])
    assert const["correlation"] == [None]
    with pytest.raises(ValueError, match="increasing"):
        cooccurrence(presence, scores, ["x", "y"], edges=(3, 2))
    with pytest.raises(ValueError, match="scores must have shape"):
        cooccurrence(presence, scores[:2], ["x", "y"])


def test_template_order() -> None:
    t = np.stack([np.full((2, 2), v) for v in (0.1, -0.5, 0.7)])
    np.testing.assert_array_equal(template_order(t), [2, 0, 1])
    np.testing.assert_array_equal(template_order(t, effect=[0.0, 1.0, -1.0]), [1, 0, 2])
    with pytest.raises(ValueError, match="effect must have shape"):
        template_order(t, effect=[1.0])


def test_disagreement_and_errors() -> None:
    assert most_disagreeing([5.0, 6.0, 2.0, 4.0], [5.1, 3.0, 2.0, 6.0], 2) == [1, 3]
    assert largest_errors([1.0, 2.0, 3.0], [1.0, 0.0, 3.5], 1) == [1]
    with pytest.raises(ValueError, match="equal length"):
        most_disagreeing([1.0], [1.0, 2.0], 1)
