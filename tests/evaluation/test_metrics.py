from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score
from torchmetrics.functional.regression import kendall_rank_corrcoef

from siam.evaluation.metrics import (
    annotator_agreement,
    attribute_ap,
    average_precision,
    infer_raters,
    kendall_tau_b,
    pearson_r,
    rmse,
)

# Fixed arrays with ties in both rankings (tau-b differs from tau-a here).
X = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])
Y = np.array([2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0, 2.0, 8.0, 4.0])


def _tau_b_by_pairs(x: np.ndarray, y: np.ndarray) -> float:
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            continue
        if sx == 0:
            tx += 1
        elif sy == 0:
            ty += 1
        elif sx == sy:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


def test_rmse_hand_computed() -> None:
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert rmse(torch.tensor([0.0]), torch.tensor([3.0])) == 3.0


def test_kendall_tau_b_against_scipy_torchmetrics_and_pair_count() -> None:
    got = kendall_tau_b(X, Y)
    assert got == pytest.approx(stats.kendalltau(X, Y, variant="b").statistic, abs=1e-12)
    assert got == pytest.approx(_tau_b_by_pairs(X, Y), abs=1e-12)
    tm = kendall_rank_corrcoef(torch.tensor(X), torch.tensor(Y), variant="b")
    assert got == pytest.approx(float(tm), abs=1e-6)
    assert kendall_tau_b(X, X) == pytest.approx(1.0)
    assert math.isnan(kendall_tau_b(X, np.ones_like(X)))


def test_pearson_against_scipy() -> None:
    assert pearson_r(X, Y) == pytest.approx(stats.pearsonr(X, Y).statistic, abs=1e-12)
    assert pearson_r(X, 2 * X + 1) == pytest.approx(1.0)
    assert math.isnan(pearson_r(X, np.zeros_like(X)))


def test_average_precision_against_sklearn_with_ties() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.5, 0.5, 0.5, 0.2, 0.1, 0.1])
    pos = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    assert average_precision(scores, pos) == pytest.approx(average_precision_score(pos, scores), abs=1e-7)
    assert math.isnan(average_precision(scores, np.zeros_like(pos)))


def test_attribute_ap_threshold_exclusion_and_mean() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=(40, 4))
    labels[:, 2] = np.where(labels[:, 2] >= 0.5, 1 / 3, labels[:, 2])  # no positives in column 2
    scores = labels + rng.normal(0, 0.4, size=labels.shape)
    res = attribute_ap(scores, labels, ["a", "b", "c", "d"])
    assert res.excluded == ["c"] and "c" not in res.per_attribute
    for k, name in enumerate("abd"):
        col = "abcd".index(name)
        want = average_precision_score(labels[:, col] >= 0.5, scores[:, col])
        assert res.per_attribute[name] == pytest.approx(want, abs=1e-7)
    assert res.mean_ap == pytest.approx(np.mean(list(res.per_attribute.values())))
    assert res.positives["c"] == 0 and res.to_dict()["excluded_no_positives"] == ["c"]
    # 0.5 itself counts as positive.
    exact = attribute_ap(np.array([[0.1], [0.9]]), np.array([[0.5], [0.0]]), ["x"])
    assert exact.positives == {"x": 1} and exact.mean_ap == pytest.approx(0.5)


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        attribute_ap(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="names"):
        attribute_ap(np.zeros((3, 2)), np.zeros((3, 2)), ["a"])


def test_annotator_agreement_fleiss_kappa_hand_computed() -> None:
    # 3 items rated by 4 annotators: yes-votes 4, 2, 0 for attribute "a".
    f = np.array([[1.0, 0.25], [0.5, 0.25], [0.0, 0.25]])
    res = annotator_agreement(f, ["a", "b"])
    assert res["raters"] == 4
    p_items = [1.0, (2 * 1 + 2 * 1) / 12, 1.0]  # P_i = sum_j n_ij (n_ij - 1) / (R (R - 1))
    p = 0.5
    want = (np.mean(p_items) - (p**2 + (1 - p) ** 2)) / (1 - (p**2 + (1 - p) ** 2))
    assert res["per_attribute"]["a"] == pytest.approx(want)
    # "b": every item has 1 of 4 votes: agreement below chance.
    pe = 0.25**2 + 0.75**2
    assert res["per_attribute"]["b"] == pytest.approx((0.5 - pe) / (1 - pe))
    assert res["fleiss_kappa"] == pytest.approx((want + (0.5 - pe) / (1 - pe)) / 2)
    assert infer_raters([0.0, 1 / 3, 2 / 3]) == 3 and infer_raters([0.123]) is None
    with pytest.raises(ValueError, match=r"\(N, K=2\)"):
        annotator_agreement(f[:, :1], ["a", "b"])
