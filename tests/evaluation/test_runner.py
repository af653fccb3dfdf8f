"""Values of :func:`siam.evaluation.runner.evaluate_model` with hand-set models and planted truth.

The models are real :class:`SIAM` / :class:`Baseline` objects whose f is replaced by a hand-set
map: each test image *is* the model's attribute maps (B, K, 4, 4) (channel k = model attribute
k), so the maps, the templates and hence every metric are known by hand. The model's attribute
order (farming, road, ocean) differs from the truth's (road, ocean, farming, wire), and the SUN
label columns come in a third order: any index mix-up changes the values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from torch.utils.data import Dataset

from siam.data.samples import Sample
from siam.data.transforms import Preprocessing
from siam.evaluation import metrics as M
from siam.evaluation.planted import load_truth
from siam.evaluation.runner import EvalData, evaluate_model
from siam.models.backbones import build_backbone
from siam.models.baseline import Baseline, BaselineOutput
from siam.models.config import ModelConfig
from siam.models.siam import SIAM

TRUTH = ("road", "ocean", "farming", "wire")
MODEL = ("farming", "road", "ocean")
SUN_COLS = ("ocean", "wire", "road", "farming")
GRID, SIDE, N = 4, 16, 40
BIAS, FLOOR = 4.0, 0.25
ROW = (np.arange(GRID) + 0.5) / GRID  # v of each truth-grid row


def _templates() -> np.ndarray:
    """(4, 4, 4) planted templates in TRUTH order: road 0 at the top, ever more negative below;
    ocean constant +2; farming -1 -> +1 from top to bottom; wire 0 (not in the model)."""
    t = np.zeros((len(TRUTH), GRID, GRID))
    t[0] = (-3.0 * ROW)[:, None]
    t[1] = 2.0
    t[2] = (-1.0 + 2.0 * ROW)[:, None]
    return t


def _masks(rng: np.random.Generator) -> np.ndarray:
    """(4, 16, 16) bool: road only in the bottom half (its top cells are never observed);
    ocean and farming random rectangles; wire a random row."""
    m = np.zeros((len(TRUTH), SIDE, SIDE), bool)
    if rng.random() < 0.8:
        y0, x0 = rng.integers(8, 14), rng.integers(0, 12)
        m[0, y0: y0 + rng.integers(2, 16 - y0 + 1), x0: x0 + rng.integers(3, 8)] = True
    for k in (1, 2):
        if rng.random() < 0.7:
            y0, x0 = rng.integers(0, 12), rng.integers(0, 12)
            m[k, y0: y0 + rng.integers(2, 6), x0: x0 + rng.integers(2, 6)] = True
    if rng.random() < 0.3:
        m[3, rng.integers(0, 16)] = True
    m[1:3] &= ~m[0]  # road on top of the others (a visible-pixel mask is exclusive)
    return m


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("truth")
    (root / "masks" / "son").mkdir(parents=True)
    rng = np.random.default_rng(0)
    T = _templates()
    ids = [str(10 + 3 * i) for i in range(N)]
    masks = np.stack([_masks(rng) for _ in ids])  # (N, 4, 16, 16)
    for i, m in zip(ids, masks):
        np.savez_compressed(root / "masks" / "son" / f"{i}.npz", masks=m)
    np.save(root / "templates.npy", T)
    (root / "meta.json").write_text(json.dumps({
        "attributes": list(TRUTH), "grid": GRID, "bias": BIAS, "noise_floor_rmse": {"test": FLOOR, "all": 0.3},
    }))
    # hand pooling: 4 x 4 blocks of the 16 x 16 masks
    pooled = masks.reshape(N, len(TRUTH), GRID, 4, GRID, 4).mean((3, 5))  # (N, 4, 4, 4)
    planted = np.einsum("kij,nkij->nk", T, pooled)  # (N, 4) <T_i, pool(M_i)>
    clean = BIAS + planted.sum(1)
    noise = np.where(np.arange(N) % 2 == 0, 0.5, -0.5)  # the written mean rating = clean +- 0.5
    return {"root": root, "truth": load_truth(root), "ids": ids, "masks": masks, "pooled": pooled,
            "planted": planted, "clean": clean, "target": clean + noise, "T": T}


class _Images(Dataset):
    """SoN (scores) or SUN (labels) samples whose 'image' is the given (3, 4, 4) maps."""

    def __init__(self, maps: np.ndarray, ids: list[str], *, scores=None, labels=None) -> None:
        self.maps, self.ids, self.scores, self.labels = maps, ids, scores, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        x = torch.as_tensor(self.maps[i], dtype=torch.float32)
        if self.labels is not None:
            return Sample(image=x, id=self.ids[i], source="sun", attributes=torch.as_tensor(self.labels[i]))
        return Sample(image=x, id=self.ids[i], source="son", score=float(self.scores[i]))


class _HandSIAM(SIAM):
    """A SIAM whose f is the identity on the 'image' (the maps themselves); g is the real head."""

    def attribute_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = x.clamp(min=0)  # (B, K, 4, 4) with K = 3 = the image channels
        return maps, torch.tanh(maps.mean((-2, -1)))


def _siam(E: np.ndarray) -> _HandSIAM:
    """A hand-set SIAM with effective templates E (K, 4, 4) in MODEL order and bias BIAS."""
    cfg = ModelConfig(kind="siam", backbone="tiny", attributes=MODEL, grid=GRID, border=0)
    model = _HandSIAM(build_backbone(name="tiny"), cfg, preprocessing=Preprocessing(resize=SIDE, crop=SIDE),
                      bias=BIAS)
    with torch.no_grad():
        e = torch.as_tensor(E, dtype=torch.float32)
        head = model.template_head
        head.templates[0, :, 0] = e.clamp(min=0)
        head.templates[0, :, 1] = (-e).clamp(min=0)
        head.mixing[:] = torch.tensor([1.0, -1.0])
        head.weight[:] = 1.0
    torch.testing.assert_close(model.effective_templates(), e)
    return model


def _model_cols() -> list[int]:
    return [TRUTH.index(n) for n in MODEL]


def _oracle_maps(w: dict) -> np.ndarray:
    return w["pooled"][:, _model_cols()]  # (N, 3, 4, 4) the true coverage of each model cell


def _data(w: dict, maps: np.ndarray, *, sun: bool = False) -> EvalData:
    son = _Images(maps, w["ids"], scores=w["target"])
    sun_ds = None
    if sun:
        rng = np.random.default_rng(1)
        labels = np.zeros((N, len(SUN_COLS)), np.float32)
        for j, name in enumerate(SUN_COLS):
            shown = w["masks"][:, TRUTH.index(name)].any((-2, -1))
            labels[:, j] = np.where(rng.random(N) < 0.85, shown, ~shown)  # noisy annotators
        sun_ds = _Images(maps, [str(i) for i in range(N)], labels=labels)
    return EvalData(son=son, sun=sun_ds, sun_attributes=SUN_COLS, truth=w["truth"], split="test")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_oracle_model_recovers_everything_with_another_attribute_order(world: dict) -> None:
    w = world
    E = w["T"][_model_cols()]
    res = evaluate_model(_siam(E), _data(w, _oracle_maps(w), sun=True), batch_size=7, return_arrays=True)
    # the score is b + sum of the planted contributions (wire's template is 0) = the clean score
    rmse = float(np.sqrt(np.mean((w["clean"] - w["target"]) ** 2)))
    assert res["son_n"] == N and res["son_rmse"] == pytest.approx(0.5, abs=1e-5) == pytest.approx(rmse)
    assert res["rmse_over_noise_floor"] == pytest.approx(0.5 / FLOOR, abs=1e-4)
    assert res["son_tau"] == pytest.approx(kendalltau(w["clean"], w["target"], variant="b").statistic, abs=1e-6)
    assert res["contribution_r"] == pytest.approx(1.0, abs=1e-6)
    assert res["template_r"] == pytest.approx(1.0, abs=1e-6)  # road and farming (ocean is flat)
    assert res["template_sign_agreement"] == 1.0
    assert res["total_map_r"] == pytest.approx(1.0, abs=1e-6) and res["total_map_constant_share"] == 0.0
    d = res["planted"]
    assert d["template_r"]["skipped"] == ["ocean"] and set(d["template_r"]["per_attribute"]) == {"road", "farming"}
    # mass_in_mask of a map equal to the coverage: sum(f^2) / sum(f) per present pair, by hand
    f = _oracle_maps(w)
    present = w["masks"][:, _model_cols()].any((-2, -1))
    pairs = (f**2).sum((-2, -1))[present] / f.sum((-2, -1))[present]
    assert res["mass_in_mask"] == pytest.approx(float(pairs.mean()), rel=1e-5)
    assert d["mass_in_mask_coverage_map"] == pytest.approx(res["mass_in_mask"], rel=1e-6)
    assert d["mass_in_mask_pairs"] == int(present.sum()) and d["mass_in_mask_empty_maps"] == 0
    # maps equal to the coverage: their mass is the coverage, r = 1 for every attribute seen often enough
    seen = [n for n, c in zip(MODEL, present.sum(0)) if c >= 30]
    assert seen and set(d["map_coverage_r"]["per_attribute"]) == set(seen)
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in d["map_coverage_r"]["per_attribute"].values())
    # SUN: presence = tanh(mean map) per model attribute, against the labels in SUN_COLS order
    pres = np.tanh(f.mean((-2, -1)))  # (N, 3) MODEL order
    labels = _data(w, f, sun=True).sun.labels
    expect = M.attribute_ap(pres, labels[:, [SUN_COLS.index(n) for n in MODEL]], MODEL).mean_ap
    assert res["sun_map"] == pytest.approx(expect, abs=1e-6)

    a = res["arrays"]
    assert a["attributes"] == ("road", "ocean", "farming")  # shared, in the truth's order
    np.testing.assert_allclose(a["son_pred"], w["clean"], atol=1e-5)
    np.testing.assert_allclose(a["son_target"], w["target"], atol=1e-6)
    np.testing.assert_allclose(a["son_clean"], w["clean"], atol=1e-5)
    np.testing.assert_allclose(a["planted_contributions"], w["planted"][:, :3], atol=1e-6)
    np.testing.assert_allclose(a["contributions"], w["planted"][:, :3], atol=1e-5)
    assert a["present"].dtype == bool and (a["present"] == w["masks"][:, :3].any((-2, -1))).all()
    np.testing.assert_allclose(np.sort(a["mass_pairs"]), np.sort(pairs), rtol=1e-5)
    assert a["total_map_r"].shape == (N,)
    assert a["sun_attributes"] == MODEL and a["sun_presence"].shape == a["sun_labels"].shape == (N, 3)
    np.testing.assert_allclose(a["sun_presence"], pres, atol=1e-6)


def test_template_r_headline_is_on_observed_cells(world: dict) -> None:
    """Issue 11: a template 0 where road is never seen and reversed where it is scores high over
    all cells but -1 over the observed ones; the headline must be the latter."""
    w = world
    E = w["T"][_model_cols()].copy()
    E[1] = np.array([0.0, 0.0, -2.0, -1.9])[:, None] / 1.0  # road: rows 0-1 never observed
    res = evaluate_model(_siam(E), _data(w, _oracle_maps(w)), return_arrays=False)
    road_all = _pearson(E[1].ravel(), w["T"][0].ravel())
    assert road_all > 0.8
    d = res["planted"]
    assert d["template_r"]["per_attribute"]["road"] == pytest.approx(-1.0, abs=1e-6)
    assert d["template_r_all_cells"]["per_attribute"]["road"] == pytest.approx(road_all, abs=1e-5)
    assert res["template_r"] == pytest.approx((-1.0 + 1.0) / 2, abs=1e-6)  # road and farming
    assert d["template_r_all_cells"]["value"] == pytest.approx((road_all + 1.0) / 2, abs=1e-5)
    assert "template_r_observed_cells" not in d and "arrays" not in res


def test_empty_maps_and_constant_total_maps_count_against_the_model(world: dict) -> None:
    """Issue 11: f fires on nothing in the second half of the images. Those present pairs score 0
    in mass_in_mask, and those images' constant total maps score r = 0 in total_map_r."""
    w = world
    maps = _oracle_maps(w).copy()
    half = N // 2
    maps[half:] = 0.0
    res = evaluate_model(_siam(w["T"][_model_cols()]), _data(w, maps), return_arrays=True)
    f = _oracle_maps(w)
    present = w["masks"][:, _model_cols()].any((-2, -1))
    share = np.where(present, (f**2).sum((-2, -1)) / np.maximum(f.sum((-2, -1)), 1e-12), 0.0)
    share[half:] = 0.0
    assert res["mass_in_mask"] == pytest.approx(float(share[present].mean()), rel=1e-5)
    assert res["planted"]["mass_in_mask_empty_maps"] == int(present[half:].sum())
    r = res["arrays"]["total_map_r"]
    varies = np.ptp(np.einsum("kij,nkij->nij", w["T"], w["pooled"]).reshape(N, -1), axis=1) > 0
    assert (r[half:][varies[half:]] == 0).all() and np.allclose(r[:half][varies[:half]], 1.0, atol=1e-5)
    assert np.isnan(r[~varies]).all()  # planted map constant: left out, for every model
    assert res["total_map_r"] == pytest.approx(varies[:half].sum() / varies.sum(), abs=1e-5)
    assert varies[half:].sum() >= 10  # today's code dropped these and reported 1.0
    assert res["total_map_constant_share"] == pytest.approx(varies[half:].sum() / varies.sum())  # of the scored
    assert res["planted"]["total_map_planted_constant"] == int((~varies).sum())


class _HandBaseline(Baseline):
    """A Baseline whose CAM is the first channel of the 'image'; score = mean CAM."""

    def forward(self, x: torch.Tensor) -> BaselineOutput:
        cam = x[:, 0]
        return BaselineOutput(score=cam.mean((1, 2)), cam=cam)


def test_baseline_cam_constant_maps_are_treated_like_siam_ones(world: dict) -> None:
    w = world
    total = np.einsum("kij,nkij->nij", w["T"], w["pooled"])  # (N, 4, 4) planted total maps
    img = np.zeros((N, 3, GRID, GRID))
    img[:, 0] = total
    img[N // 2:, 0] = 1.0  # constant CAMs in the second half
    cfg = ModelConfig(kind="baseline", backbone="tiny", attributes=(), grid=GRID, border=0)
    base = _HandBaseline(build_backbone(name="tiny"), cfg, preprocessing=Preprocessing(resize=SIDE, crop=SIDE))
    res = evaluate_model(base, _data(w, img), return_arrays=True)
    varies = np.ptp(total.reshape(N, -1), axis=1) > 0
    assert res["total_map_r"] == pytest.approx(varies[: N // 2].sum() / varies.sum(), abs=1e-5)
    assert res["total_map_constant_share"] == pytest.approx(varies[N // 2:].sum() / varies.sum())
    assert res["contribution_r"] is None and res["mass_in_mask"] is None and res["template_r"] is None
    a = res["arrays"]
    assert a["contributions"] is None and a["sun_presence"] is None
    np.testing.assert_allclose(a["son_pred"], total.mean((1, 2))[: N // 2].tolist() + [1.0] * (N - N // 2), atol=1e-5)


def test_a_separate_test_world_is_evaluated_whole(tmp_path: Path) -> None:
    """The truth command's big test world: same synth settings, another seed, split "all"."""
    from siam.synth import SynthConfig, generate
    from siam.evaluation.cli import load_eval_data
    from siam.models.siam import build_model

    cfg = SynthConfig(n_sun=10, n_son=14, size=(32, 32), grid=4, attributes=MODEL + ("wire",))
    generate(tmp_path / "w", seed=9, config=cfg)
    torch.manual_seed(0)
    model = build_model(backbone="tiny", attributes=MODEL, grid=4, border=0,
                        preprocessing=Preprocessing(resize=32, crop=32))
    d = load_eval_data(preprocessing=model.preprocessing, split="all", data=tmp_path / "w")
    assert len(d["son"]) == 14 and len(d["sun"]) == 10
    ev = EvalData(son=d["son"], sun=d["sun"], sun_attributes=d["sun_attributes"], truth=d["truth"], split="all")
    res = evaluate_model(model, ev, return_arrays=True)
    floor = d["truth"].noise_floor_rmse["all"]
    assert res["son_n"] == 14 and res["rmse_over_noise_floor"] == pytest.approx(res["son_rmse"] / floor)
    a = res["arrays"]
    assert a["contributions"].shape == a["present"].shape == (14, 3) and a["son_clean"].shape == (14,)
    # son_clean is the planted clean score: the written Averages scatter around it at the floor
    assert np.sqrt(np.mean((a["son_clean"] - a["son_target"]) ** 2)) == pytest.approx(floor, rel=1e-4)
    assert a["sun_presence"].shape == (10, 3)
