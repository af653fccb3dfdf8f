from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from siam.errors import DatasetError
from siam.evaluation import planted as P

NAMES = ("a", "b", "c", "d")


def _case(seed: int = 0, n: int = 30, m: int = 4, hw: int = 16):
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(len(NAMES), m, m))
    T[3] = 0.7  # spatially constant template: no template_r, still has a sign
    masks = rng.random((n, len(NAMES), hw, hw)) < rng.random((n, len(NAMES), 1, 1))
    return T, masks


def test_pool_masks_gives_cell_fractions() -> None:
    mask = np.zeros((8, 8), bool)
    mask[:4, :2] = True  # top-left cell fully, top-right cell not at all (grid 2: 4x4 cells)
    got = P.pool_masks(mask, 2)
    torch.testing.assert_close(got, torch.tensor([[0.5, 0.0], [0.0, 0.0]]))


def test_masks_on_model_grid_follows_resize_and_centre_crop() -> None:
    mask = np.zeros((20, 20), bool)
    mask[:, 10:] = True  # right half
    got = P.masks_on_model_grid(mask, 2, resize=20, crop=10)  # crop rows/cols 5..14
    torch.testing.assert_close(got, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_perfect_recovery_gives_one_everywhere() -> None:
    T, masks = _case()
    pooled = P.pool_masks(masks, 4)  # (N, K, 4, 4)
    planted = P.planted_contributions(T, pooled)  # (N, K)
    present = masks.reshape(*masks.shape[:2], -1).any(-1)
    cr = P.contribution_r(3.0 * planted + 1.0, planted, present, NAMES)
    assert cr.value == pytest.approx(1.0)
    tr = P.template_r(2.0 * torch.as_tensor(T) + 0.5, T, NAMES)
    assert tr.value == pytest.approx(1.0) and tr.skipped == ["d"]
    assert P.effect_sign_agreement(5.0 * planted, planted, present, NAMES).value == 1.0
    totals = P.planted_total_maps(T, pooled)
    np.testing.assert_allclose(P.total_map_r(2.0 * totals + 3.0, totals), 1.0, atol=1e-6)
    # Hand check of one planted contribution: <T_i, pool(M_i)>.
    assert float(planted[0, 1]) == pytest.approx(float((T[1] * pooled[0, 1].numpy()).sum()), rel=1e-5)


def test_template_r_resamples_a_finer_learned_grid() -> None:
    T, _ = _case()
    finer = torch.as_tensor(T, dtype=torch.float32).repeat_interleave(2, -1).repeat_interleave(2, -2)  # (K, 8, 8)
    assert P.template_r(finer, T, NAMES).value == pytest.approx(1.0)


def test_effect_sign_agreement_counts_flipped_and_skips_zero_effects() -> None:
    planted = torch.tensor([[1.0, -2.0, 0.0, 0.5], [3.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    present = torch.tensor([[True, True, True, True], [True, True, True, False], [False, False, False, False]])
    pred = torch.tensor([[0.5, 1.0, 9.0, -0.1], [0.1, 1.0, -9.0, 7.0], [-99.0, 0.0, 0.0, 0.0]])
    res = P.effect_sign_agreement(pred, planted, present, NAMES)
    # a: +0.3 vs +2 agrees (the absent third image does not count); b: +1 vs -1.5 disagrees;
    # c: zero planted effect, skipped; d: -0.1 vs +0.5 disagrees.
    assert res.per_item == {"a": 1.0, "b": 0.0, "d": 0.0} and res.skipped == ["c"]
    assert res.value == pytest.approx(1 / 3)


def test_contribution_r_skips_rare_attributes_and_scores_anticorrelation() -> None:
    T, masks = _case()
    masks[:, 2] = False
    masks[0, 2, :2, :2] = True  # attribute c in 1 of 30 images (< 5 %)
    pooled = P.pool_masks(masks, 4)
    planted = P.planted_contributions(T, pooled)
    present = masks.reshape(*masks.shape[:2], -1).any(-1)
    pred = planted.clone()
    pred[:, 0] = -pred[:, 0]
    res = P.contribution_r(pred, planted, present, NAMES)
    assert "c" in res.skipped and res.per_item["a"] == pytest.approx(-1.0)
    assert res.value == pytest.approx((-1.0 + 1.0 + 1.0) / 3)


def test_mass_in_mask_hand_computed() -> None:
    frac = torch.zeros(1, 2, 2, 2)
    frac[0, 0, 0, :] = 1.0  # attribute 0 covers the top row of cells
    frac[0, 1] = 0.25  # attribute 1 covers a quarter of every cell
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 3.0
    maps[0, 0, 1, 1] = 1.0  # 3 of 4 units inside
    maps[0, 1] = 1.0  # uniform map: a quarter inside
    got = P.mass_in_mask(maps, frac, torch.tensor([[True, True]]))
    np.testing.assert_allclose(got, [0.75, 0.25])
    # An empty map of a present attribute scores 0 (issue 11: it used to be left out); absent
    # attributes, and present ones with no coverage in the model's view, are not pairs.
    maps[0, 1] = 0.0
    np.testing.assert_allclose(P.mass_in_mask(maps, frac, torch.tensor([[True, True]])), [0.75, 0.0])
    assert P.mass_in_mask(maps, frac, torch.tensor([[False, False]])).size == 0
    frac[0, 1] = 0.0  # present in the image, but cropped away: not a pair
    np.testing.assert_allclose(P.mass_in_mask(maps, frac, torch.tensor([[True, True]])), [0.75])


def test_mass_in_mask_counts_a_model_that_fires_on_nothing_as_zero() -> None:
    """The issue's case: every map empty except one well-placed pair; 162 present pairs."""
    n, k = 54, 3
    frac = torch.zeros(n, k, 2, 2)
    frac[..., 0, :] = 0.5  # each attribute covers half of the top row of cells
    maps = torch.zeros(n, k, 2, 2)
    maps[0, 0, 0, 0], maps[0, 0, 1, 1] = 0.82, 0.18  # 0.82 * 0.5 / 1.0 inside, hand-computed 0.41
    got = P.mass_in_mask(maps, frac, torch.ones(n, k, dtype=torch.bool))
    assert got.shape == (162,)
    assert got[0] == pytest.approx(0.41) and (got[1:] == 0).all()
    assert got.mean() == pytest.approx(0.41 / 162)  # today's code gave 0.41 (1 pair of 162 scored)


def test_total_map_r_uses_only_valid_cells_and_treats_constant_maps_alike() -> None:
    planted = torch.arange(16.0).reshape(1, 4, 4)
    pred = planted.clone()
    pred[0, 0, 0] = 100.0  # garbage in a border cell
    valid = torch.ones(4, 4)
    valid[0, 0] = 0
    assert P.total_map_r(pred, planted, valid=valid)[0] == pytest.approx(1.0)
    assert P.total_map_r(pred, planted)[0] < 0.99
    # a constant predicted map locates nothing: r = 0 (it used to be NaN and dropped, which
    # favoured a model with many constant maps); a constant planted map judges no model: NaN
    assert P.total_map_r(torch.ones(1, 4, 4), planted)[0] == 0.0
    both = P.total_map_r(torch.stack([planted[0], torch.zeros(4, 4)]), torch.cat([planted, planted]))
    np.testing.assert_allclose(both, [1.0, 0.0])
    assert np.nanmean(both) == pytest.approx(0.5)  # today's code: 1.0
    assert np.isnan(P.total_map_r(planted, torch.zeros(1, 4, 4))[0])
    assert P.constant_maps(torch.stack([planted[0], torch.zeros(4, 4)]), 4).tolist() == [False, True]
    # on valid cells only: garbage confined to the border does not make a map non-constant
    assert P.constant_maps(torch.where(valid > 0, 2.0, 9.0)[None], 4, valid=valid).tolist() == [True]


def test_observed_cells_are_those_with_mean_coverage_above_the_share() -> None:
    pooled = torch.zeros(10, 2, 2, 2)
    pooled[0, 0, 1, :] = 0.5  # attribute 0 seen once in the bottom row: mean 0.05
    pooled[:, 1, 0, 0] = 0.001  # attribute 1 barely: mean 0.001 < 0.002
    got = P.observed_cells(pooled)
    assert got.tolist() == [[[False, False], [True, True]], [[False, False], [False, False]]]
    assert P.observed_cells(pooled, share=0.0005)[1, 0, 0]


def test_load_truth_and_masks(tmp_path: Path) -> None:
    root = tmp_path / "truth"
    with pytest.raises(DatasetError, match="meta.json is missing"):
        P.load_truth(root)
    (root / "masks" / "son").mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"attributes": list(NAMES), "grid": 4, "bias": 5.0,
                                                "noise_floor_rmse": {"test": 0.5}}))
    np.save(root / "templates.npy", np.zeros((4, 4, 4)))
    np.savez_compressed(root / "masks" / "son" / "7.npz", masks=np.ones((4, 8, 8), bool))
    truth = P.load_truth(root)
    assert truth.grid == 4 and truth.noise_floor_rmse == {"test": 0.5} and truth.bias == 5.0
    assert truth.masks("son", "7").shape == (4, 8, 8)
    with pytest.raises(DatasetError, match="no planted masks"):
        truth.masks("son", "8")
    np.save(root / "templates.npy", np.zeros((3, 4, 4)))
    with pytest.raises(DatasetError, match=r"\(K=4, m, m\)"):
        P.load_truth(root)


def test_template_r_on_observed_cells_ignores_unconstrained_ones() -> None:
    T, _ = _case()
    learned = torch.as_tensor(T, dtype=torch.float32).clone()
    rng = np.random.default_rng(5)
    cells = np.ones(T.shape, bool)
    cells[:, :2] = False  # the top two rows were never seen
    learned[:, :2] = torch.as_tensor(rng.normal(scale=10.0, size=(len(NAMES), 2, T.shape[-1])), dtype=torch.float32)
    everywhere = P.template_r(learned, T, NAMES)
    seen = P.template_r(learned, T, NAMES, cells=cells)
    assert everywhere.value < 0.9  # noise in unseen cells drags the plain metric down
    assert seen.value == pytest.approx(1.0) and seen.skipped == ["d"]
    with pytest.raises(ValueError, match="cells must be"):
        P.template_r(learned, T, NAMES, cells=cells[:2])


# --- explanation checks: correctness, map_spearman, bootstrap_ci ---------------------------------


def test_correctness_is_funnybirds_half_rho_plus_half_per_image() -> None:
    attr = np.array([
        [3.0, 2.0, 1.0, 9.0],  # present a, b, c: same order as the effects -> rho 1 -> 1.0
        [1.0, 2.0, 3.0, 0.0],  # reversed -> rho -1 -> 0.0
        [1.0, 3.0, 2.0, 0.0],  # hand-computed: ranks (1, 3, 2) vs (3, 2, 1): rho = -0.5 -> 0.25
        [5.0, 5.0, 5.0, 5.0],  # constant attribution: ranks nothing -> rho 0 -> 0.5
        [1.0, 2.0, 0.0, 0.0],  # one present attribute: NaN
        [1.0, 2.0, 3.0, 0.0],  # effects all equal: nothing to rank -> NaN
    ])
    eff = np.array([
        [30.0, 20.0, -1.0, 0.0],
        [3.0, 2.0, 1.0, 0.0],
        [3.0, 2.0, 1.0, 0.0],
        [1.0, 2.0, 3.0, 0.0],
        [1.0, 2.0, 3.0, 0.0],
        [2.0, 2.0, 2.0, 0.0],
    ])
    present = np.array([[1, 1, 1, 0]] * 4 + [[1, 0, 0, 0], [1, 1, 1, 0]], bool)
    got = P.correctness(attr, eff, present)
    np.testing.assert_allclose(got[:4], [1.0, 0.0, 0.25, 0.5])
    assert np.isnan(got[4]) and np.isnan(got[5])
    # the absent attribute d (attribution 9) is not ranked: else row 0 would not be perfect
    # cross-check with scipy on random data, ties included
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a, e = rng.integers(0, 4, (20, 6)).astype(float), rng.normal(size=(20, 6))
    pr = rng.random((20, 6)) < 0.7
    got = P.correctness(a, e, pr)
    for n in range(20):
        k = pr[n]
        if k.sum() < 2:
            assert np.isnan(got[n])
            continue
        rho = spearmanr(a[n, k], e[n, k]).statistic
        assert got[n] == pytest.approx(0.5 * (0.0 if np.isnan(rho) else rho) + 0.5)
    with pytest.raises(ValueError, match="N, K"):
        P.correctness(a[:, :3], e, pr)


def test_map_spearman_per_image_against_scipy_and_nan_for_constant_maps() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 3, 4, 4))
    b = a**3 + 0.5 * rng.normal(size=a.shape)
    b[1] = np.exp(a[1])  # monotone: 1
    b[2] = -a[2]  # reversed: -1
    b[3] = 0.0  # constant: NaN
    got = P.map_spearman(a, torch.as_tensor(b))
    assert got.shape == (5,)
    assert got[1] == pytest.approx(1.0) and got[2] == pytest.approx(-1.0) and np.isnan(got[3])
    for n in (0, 4):
        assert got[n] == pytest.approx(spearmanr(a[n].ravel(), b[n].ravel()).statistic)
    with pytest.raises(ValueError, match="one shape"):
        P.map_spearman(a, b[:, :2])


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(3)
    small, big = rng.normal(2.0, 1.0, 50), rng.normal(2.0, 1.0, 2000)
    lo, hi = P.bootstrap_ci(small, n_boot=500)
    assert lo < small.mean() < hi
    # percentile bootstrap of a mean ~ mean +- 1.96 sd / sqrt(n)
    assert hi - lo == pytest.approx(2 * 1.96 * small.std() / np.sqrt(50), rel=0.2)
    lo2, hi2 = P.bootstrap_ci(big, n_boot=500)
    assert hi2 - lo2 < 0.25 * (hi - lo)
    assert P.bootstrap_ci(small, n_boot=200, seed=4) == P.bootstrap_ci(small, n_boot=200, seed=4)
    # NaN entries are ignored by the default nanmean; a constant sample has a zero-width interval
    assert P.bootstrap_ci(np.array([1.0, np.nan, 1.0, 1.0])) == (1.0, 1.0)


def test_bootstrap_ci_resamples_paired_arrays_together() -> None:
    rng = np.random.default_rng(5)
    target = rng.normal(size=300)
    pred = target + rng.normal(0, 0.5, 300)
    rmse = lambda p, t: np.sqrt(np.mean((p - t) ** 2))  # noqa: E731
    lo, hi = P.bootstrap_ci((pred, target), stat=rmse, n_boot=400)
    assert lo < rmse(pred, target) < hi and 0.4 < lo < hi < 0.6
    # resampled together: pred == target stays exactly 0 (apart it would not)
    assert P.bootstrap_ci((target, target), stat=rmse, n_boot=50) == (0.0, 0.0)
    # per-attribute r over (N, K) arrays: stat may take the whole rows
    first_r = lambda x, y: np.corrcoef(x[:, 0], y[:, 0])[0, 1]  # noqa: E731
    lo, hi = P.bootstrap_ci((np.stack([pred, -pred], 1), np.stack([target, target], 1)), stat=first_r, n_boot=200)
    assert 0.8 < lo < hi < 1.0
    with pytest.raises(ValueError, match="share"):
        P.bootstrap_ci((pred, target[:10]))


def test_per_attribute_contribution_r_keeps_rare_attributes_seen_often_enough() -> None:
    """An attribute in 4 % of 1000 images (40 >= 30) is below the headline's 5 % share, so the
    headline skips it, but the per-attribute diagnostic reports its r; one in 2 % (20) is skipped."""
    from siam.evaluation.planted import contribution_r, contribution_r_per_attribute

    rng = np.random.default_rng(0)
    n = 1000
    present = np.zeros((n, 3), dtype=bool)
    present[:, 0] = rng.random(n) < 0.5
    present[:40, 1] = True
    present[:20, 2] = True
    planted = present * rng.uniform(0.5, 1.5, (n, 3))
    predicted = 2 * planted + 0.1 * present * rng.normal(size=(n, 3))
    names = ["common", "rare", "rarer"]
    headline = contribution_r(predicted, planted, present, names)
    each = contribution_r_per_attribute(predicted, planted, present, names)
    assert set(headline.per_item) == {"common"} and set(each.per_item) == {"common", "rare"}
    assert each.skipped == ["rarer"]
    want = float(np.corrcoef(predicted[:, 1], planted[:, 1])[0, 1])
    assert each.per_item["rare"] == pytest.approx(want, abs=1e-9)


def test_map_coverage_r_is_pearson_of_map_mass_and_coverage_and_scale_free() -> None:
    """A map whose mass grows with the coverage (at any scale) scores 1; one that ignores it ~0;
    the value is scipy's Pearson r across all the images, present or not."""
    from scipy.stats import pearsonr

    from siam.evaluation.planted import map_coverage_r

    rng = np.random.default_rng(1)
    n = 400
    present = rng.random((n, 3)) < 0.3
    coverage = present * rng.uniform(0.5, 8.0, (n, 3))  # cells' worth of the attribute
    mass = np.stack([5.0 * coverage[:, 0],  # tracks it, at another scale
                     rng.uniform(0, 8, n),  # ignores it
                     coverage[:, 2] + rng.normal(0, 1.0, n)], 1)  # tracks it with noise
    got = map_coverage_r(mass, coverage, present, ["a", "b", "c"])
    assert got.per_item["a"] == pytest.approx(1.0, abs=1e-9)
    assert abs(got.per_item["b"]) < 0.15
    assert got.per_item["c"] == pytest.approx(pearsonr(mass[:, 2], coverage[:, 2]).statistic, abs=1e-9)
