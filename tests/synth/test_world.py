"""``siam synth``: layout, real formats, determinism, the planted score identity and read-back by the
project's own loaders. Generation runs are tiny (64 px, tens of images) and shared per module."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from siam.cli import main
from siam.errors import ConfigError, DatasetError
from siam.synth import DEFAULT_ATTRIBUTES, SynthConfig, generate, planted_templates, pool_to_grid
from siam.synth import world as syn
from siam.synth._render import NOT_DISTINCT, RENDERED, render_scene
from siam.synth._sun33 import sun33_levels
from siam.vocab import SUN33

SMALL = SynthConfig(n_sun=40, n_son=60, size=(64, 64), grid=8)
HEADER = "ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    out = {
        "a": generate(base / "a", seed=0, config=SMALL, workers=1).out,
        "b": generate(base / "b", seed=0, config=SMALL, workers=2).out,  # same seed, 2 processes
        "c": generate(base / "c", seed=1, config=SMALL, workers=1).out,
    }
    return out


def _votes(d: Path) -> list[list[str]]:
    lines = (d / "son" / "votes.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER
    return [line.split("\t") for line in lines[1:]]


def _meta(d: Path) -> dict:
    return json.loads((d / "truth" / "meta.json").read_text(encoding="utf-8"))


def _masks(d: Path, part: str, key: str) -> np.ndarray:
    with np.load(d / "truth" / "masks" / part / f"{key}.npz") as z:
        assert z.files == ["masks"]
        return z["masks"]


@functools.lru_cache(maxsize=8)
def _clean_scores(d: Path) -> tuple[list[str], np.ndarray]:
    """Recompute y = b + sum_i <T_i, M_i> independently (torch's adaptive average pooling)."""
    meta = _meta(d)
    templates = torch.from_numpy(np.load(d / "truth" / "templates.npy")).double()  # (K, m, m)
    ids = [r[0] for r in _votes(d)]
    ys = []
    for i in ids:
        m = torch.from_numpy(_masks(d, "son", i)).double()  # (K, H, W)
        pooled = F.adaptive_avg_pool2d(m, meta["grid"])  # (K, m, m)
        ys.append(meta["bias"] + float((templates * pooled).sum()))
    return ids, np.array(ys)


def _split_blocks(meta: dict) -> dict[str, slice]:
    s = meta["son_split"]
    a, b = s["train"], s["train"] + s["val"]
    return {"train": slice(0, a), "val": slice(a, b), "test": slice(b, b + s["test"])}


# --- layout and formats -----------------------------------------------------------------------

def test_layout(runs: dict[str, Path]) -> None:
    d = runs["a"]
    meta = _meta(d)
    k = len(meta["attributes"])
    for rel in ("sun/images.mat", "sun/attributes.mat", "sun/attributeLabels_continuous.mat",
                "sun/trainval_idx.mat", "son/votes.tsv", "son_attributes.csv", "truth/templates.npy"):
        assert (d / rel).is_file(), rel
    assert {"attributes", "grid", "bias", "noise_floor_rmse", "settings"} <= set(meta)
    assert meta["attributes"] == list(DEFAULT_ATTRIBUTES) and meta["grid"] == 8
    assert set(meta["noise_floor_rmse"]) == {"train", "val", "test", "all"}
    t = np.load(d / "truth" / "templates.npy")
    assert t.dtype == np.float32 and t.shape == (k, 8, 8)
    assert SynthConfig.from_dict(meta["settings"]) == SMALL


def test_sun_files_are_the_real_format(runs: dict[str, Path]) -> None:
    d = runs["a"] / "sun"
    images = scipy.io.loadmat(d / "images.mat")["images"]
    assert images.shape == (40, 1) and images.dtype == object
    names = [m[0][0] for m in images]  # how the SIAM authors read it
    assert names[0] == "synth/scene_00000.jpg" and len(set(names)) == 40
    for n in names:
        with Image.open(d / "images" / n) as im:
            assert im.format == "JPEG" and im.size == (64, 64)
    attrs = [m[0][0] for m in scipy.io.loadmat(d / "attributes.mat")["attributes"]]
    assert attrs == list(DEFAULT_ATTRIBUTES)
    labels = scipy.io.loadmat(d / "attributeLabels_continuous.mat")["labels_cv"]
    assert labels.shape == (40, len(attrs)) and labels.dtype == np.float64
    thirds = labels * 3
    assert np.allclose(thirds, np.rint(thirds)) and set(np.rint(thirds).ravel().tolist()) <= {0, 1, 2, 3}
    assert len(set(np.rint(thirds).ravel().tolist())) >= 3  # annotators disagree
    sets = scipy.io.loadmat(d / "trainval_idx.mat")["sets"]
    assert sets.shape == (40, 1)
    counts = [int((sets == v).sum()) for v in (0, 1, 2)]
    val, test = round(40 * 1497 / 14340), round(40 * 1429 / 14340)  # paper proportions
    assert counts == [40 - val - test, val, test]


def test_masks_match_images_and_labels(runs: dict[str, Path]) -> None:
    d = runs["a"]
    k = len(DEFAULT_ATTRIBUTES)
    labels = scipy.io.loadmat(d / "sun" / "attributeLabels_continuous.mat")["labels_cv"]
    visible = np.zeros_like(labels, dtype=bool)
    for row in range(40):
        m = _masks(d, "sun", str(row))
        assert m.dtype == bool and m.shape == (k, 64, 64)
        assert m.sum(0).max() <= 1  # default attributes occlude each other: one owner per pixel
        visible[row] = m.any(axis=(1, 2))
    for sid, *_ in _votes(d):
        m = _masks(d, "son", sid)
        with Image.open(d / "son" / "images" / f"{sid}.jpg") as im:
            assert m.shape == (k, im.height, im.width)
    assert visible.any(1).mean() > 0.5
    # annotators label what is visible: far more votes where the attribute shows than where not
    assert labels[visible].mean() > labels[~visible].mean() + 0.3


def test_votes_tsv_historical_format(runs: dict[str, Path]) -> None:
    rows = _votes(runs["a"])
    assert len(rows) == 60
    ids = [int(r[0]) for r in rows]
    assert ids == sorted(set(ids)) and ids[0] >= 1
    for sid, lat, lon, avg, var, votes, uri in rows:
        v = np.array([int(x) for x in votes.split(",")])
        assert 3 <= len(v) <= 10 and v.min() >= 1 and v.max() <= 10
        assert avg == f"{v.mean():.4f}" and var == f"{v.var(ddof=0):.4f}"
        assert uri == f"http://www.geograph.org.uk/photo/{6 * int(sid) + 1}"  # the photo number is not the ID
        assert 49 < float(lat) < 59 and -6 < float(lon) < 2
        assert (runs["a"] / "son" / "images" / f"{sid}.jpg").is_file()


def test_vote_variance_is_the_population_variance_of_the_real_file() -> None:
    # Row 1 of the historical ScenicOrNot votes.tsv: votes 4,5,3,5,1,4,4,5,6 -> 4.1111, 1.8765.
    assert syn._vote_stats([4, 5, 3, 5, 1, 4, 4, 5, 6]) == ("4.1111", "1.8765")


def test_son_attribute_csv(runs: dict[str, Path]) -> None:
    d = runs["a"]
    lines = (d / "son_attributes.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == ["id", *DEFAULT_ATTRIBUTES]
    meta = _meta(d)
    test_ids = [r[0] for r in _votes(d)][_split_blocks(meta)["test"]]
    body = [line.split(",") for line in lines[1:]]
    assert len(body) == min(90, len(test_ids)) == meta["son_attributes"]["n"]
    assert {r[0] for r in body} <= set(test_ids)
    values = {float(x) for r in body for x in r[1:]}
    assert values <= {0, 0.25, 0.5, 0.75, 1} and len(values) >= 3


# --- determinism --------------------------------------------------------------------------------

def _mat(d: Path, name: str, key: str) -> np.ndarray:
    return scipy.io.loadmat(d / "sun" / name)[key]


def test_same_seed_same_output_whatever_the_worker_count(runs: dict[str, Path]) -> None:
    a, b = runs["a"], runs["b"]
    for rel in ("son/votes.tsv", "son_attributes.csv", "truth/templates.npy"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for name, key in (("images.mat", "images"), ("attributes.mat", "attributes"),
                      ("attributeLabels_continuous.mat", "labels_cv"), ("trainval_idx.mat", "sets")):
        assert np.array_equal(_mat(a, name, key), _mat(b, name, key)), name
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".jpg", ".npz"))
    assert len(files) == 2 * (40 + 60)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert _meta(a) == _meta(b)


def test_different_seed_differs(runs: dict[str, Path]) -> None:
    a, c = runs["a"], runs["c"]
    assert (a / "son" / "votes.tsv").read_bytes() != (c / "son" / "votes.tsv").read_bytes()
    la, lc = (_mat(d, "attributeLabels_continuous.mat", "labels_cv") for d in (a, c))
    assert not np.array_equal(la, lc)
    name = "sun/images/synth/scene_00000.jpg"
    assert (a / name).read_bytes() != (c / name).read_bytes()


# --- the planted truth --------------------------------------------------------------------------

def test_noise_floor_is_the_rmse_of_the_clean_score(runs: dict[str, Path]) -> None:
    d = runs["a"]
    meta = _meta(d)
    _, y = _clean_scores(d)
    avg = np.array([float(r[3]) for r in _votes(d)])
    for split, sl in _split_blocks(meta).items():
        rmse = float(np.sqrt(np.mean((y[sl] - avg[sl]) ** 2)))
        assert rmse == pytest.approx(meta["noise_floor_rmse"][split], rel=1e-9, abs=1e-12)
        assert rmse > 0.2  # the floor is clearly above 0 with the default vote noise
    rmse_all = float(np.sqrt(np.mean((y - avg) ** 2)))  # every SoN image, for split="all"
    assert rmse_all == pytest.approx(meta["noise_floor_rmse"]["all"], rel=1e-9, abs=1e-12)


def test_average_scatters_around_the_clean_score_at_the_noise_level(runs: dict[str, Path]) -> None:
    d = runs["a"]
    _, y = _clean_scores(d)
    rows = _votes(d)
    avg = np.array([float(r[3]) for r in rows])
    n = np.array([len(r[5].split(",")) for r in rows])
    sigma = np.sqrt(SMALL.noise**2 + 1 / 12)  # vote noise plus rounding to integers
    inside = (y > 2.5) & (y < 8.5)  # away from the 1..10 clipping
    z = (avg - y)[inside] * np.sqrt(n[inside]) / sigma
    assert inside.sum() >= 40
    assert abs(z.mean()) < 3 / np.sqrt(inside.sum())
    assert 0.7 < z.std() < 1.3
    assert 0.5 < y.std() < 3.0  # the planted signal dominates the noise


def test_without_noise_each_vote_is_the_rounded_clean_score(tmp_path: Path) -> None:
    cfg = SynthConfig(n_sun=10, n_son=30, size=(64, 64), grid=8, noise=0.0)
    generate(tmp_path, seed=5, config=cfg)
    _, y = _clean_scores(tmp_path)
    rows = _votes(tmp_path)
    expected = np.clip(np.rint(y), 1, 10)
    for r, e in zip(rows, expected):
        assert {int(v) for v in r[5].split(",")} == {int(e)} and r[4] == "0.0000"
    assert len(set(expected.tolist())) >= 3


def test_planted_template_signs_and_vertical_only_variation() -> None:
    names = list(DEFAULT_ATTRIBUTES)
    t = planted_templates(names, 8)
    assert t.dtype == np.float32 and t.shape == (len(names), 8, 8)
    assert np.array_equal(t, t[:, :, ::-1])  # invariant to horizontal flips
    assert np.all(t == t[:, :, :1])  # constant along each row
    for n in ("ocean", "still_water", "running_water", "ice_snow", "hiking"):
        assert (t[names.index(n)] > 0).all(), n
    for n in ("metal", "wire", "transport"):
        assert (t[names.index(n)] < 0).all(), n
    farming = t[names.index("farming"), :, 0]
    assert farming[0] < 0 < farming[-1] and np.all(np.diff(farming) > 0)
    assert not t[names.index("grass")].any()  # some attributes have no effect at all
    # <T_i, full mask> is tau averaged over rows, whatever the grid
    full = [planted_templates(names, m).astype(np.float64).sum((1, 2)) for m in (4, 8, 16)]
    assert np.allclose(full[0], full[1]) and np.allclose(full[1], full[2])


def test_saved_templates_are_the_planted_ones(runs: dict[str, Path]) -> None:
    meta = _meta(runs["a"])
    saved = np.load(runs["a"] / "truth" / "templates.npy")
    assert np.array_equal(saved, planted_templates(meta["attributes"], meta["grid"]))
    kinds = {n: v["kind"] for n, v in meta["templates"].items()}
    assert kinds["farming"] == "vertical" and kinds["ocean"] == "positive" and kinds["wire"] == "negative"


@pytest.mark.parametrize(
    "shape,grid", [((3, 64, 64), 8), ((2, 48, 80), 6), ((2, 97, 131), 7), ((1, 33, 40), 15)]
)
def test_pool_to_grid_is_adaptive_average_pooling(shape: tuple[int, int, int], grid: int) -> None:
    m = np.random.default_rng(0).random(shape) < 0.3
    ref = F.adaptive_avg_pool2d(torch.from_numpy(m).double(), grid).numpy()
    assert np.allclose(pool_to_grid(m, grid), ref, rtol=0, atol=1e-12)


def test_every_attribute_renders_nonsquare_with_overlays(tmp_path: Path) -> None:
    cfg = SynthConfig(n_sun=10, n_son=12, size=(80, 48), grid=6, attributes=SUN33)
    generate(tmp_path, seed=2, config=cfg)
    _, y = _clean_scores(tmp_path)
    meta = _meta(tmp_path)
    avg = np.array([float(r[3]) for r in _votes(tmp_path)])
    sl = _split_blocks(meta)["train"]
    assert float(np.sqrt(np.mean((y[sl] - avg[sl]) ** 2))) == pytest.approx(meta["noise_floor_rmse"]["train"])
    rng = np.random.default_rng(0)
    names = list(SUN33)
    for name in sorted(RENDERED):
        img, masks = render_scene(rng, [name], names, height=48, width=80)
        assert img.shape == (48, 80, 3) and img.dtype == np.uint8 and masks.shape == (33, 48, 80)
        assert masks[names.index(name)].any(), name  # alone in a scene, it is visible
        others = np.delete(masks, names.index(name), axis=0)
        assert not others.any(), name


def test_row_weighting_keeps_real_rows_and_lifts_rare_attributes() -> None:
    levels = sun33_levels()[:, [SUN33.index(n) for n in DEFAULT_ATTRIBUTES]]
    shown = np.asarray(syn.PRESENCE_BY_VOTES)[levels]  # (N, K) chance each row shows each one
    real = syn._row_weights(levels, 0.0)
    assert np.allclose(real, 1 / len(levels))  # balance 0: the real marginals
    boosted = syn._row_weights(levels, 1.0)
    assert boosted.sum() == pytest.approx(1.0) and boosted.min() > 0
    before, after = real @ shown, boosted @ shown  # (K,) expected share of scenes
    assert before.min() < 0.01 and after.min() > 0.03
    rarest = int(np.argmin(before))
    assert after[rarest] > 3 * before[rarest]
    # rows with nothing rare keep the lowest weight
    assert boosted[(levels < 2).all(1)].max() == pytest.approx(boosted.min())


def test_default_set_excludes_the_attributes_that_are_not_distinct() -> None:
    assert set(NOT_DISTINCT) == {"aged_worn", "dirty", "rusty", "cluttered_space"}
    assert set(DEFAULT_ATTRIBUTES) == set(SUN33) - set(NOT_DISTINCT)
    assert RENDERED == set(SUN33)


def test_embedded_cooccurrence_is_the_real_sun33_table(sun33_dir: Path) -> None:
    real = scipy.io.loadmat(sun33_dir / "attributeLabels_continuous.mat")["labels_cv"]
    names = [m[0][0] for m in scipy.io.loadmat(sun33_dir / "attributes.mat")["attributes"]]
    assert names == list(SUN33)
    assert np.array_equal(sun33_levels() / 3, real)


# --- configuration and command line -----------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"n_sun": 5}, ["n_sun", "5", ">= 10"]),
        ({"n_son": 300_000}, ["n_son", "300000"]),
        ({"n_sun": True}, ["n_sun", "True"]),
        ({"size": (64,)}, ["size", "(width, height)"]),
        ({"size": (16, 64)}, ["size", "16"]),
        ({"grid": 0}, ["grid", "0"]),
        ({"size": (40, 40), "grid": 41}, ["grid", "41"]),
        ({"noise": -1.0}, ["noise", "-1.0"]),
        ({"noise": float("nan")}, ["noise", "nan"]),
        ({"balance": 3.0}, ["balance", "3.0", "[0, 2]"]),
        ({"attributes": ("ocean", "unicorns")}, ["unicorns", "allowed", "ocean"]),
        ({"attributes": ("ocean", "ocean")}, ["duplicates", "ocean"]),
        ({"attributes": ()}, ["at least one"]),
        ({"attributes": "ocean"}, ["list of names", "ocean"]),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        SynthConfig(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_config_is_frozen_and_rejects_unknown_keys() -> None:
    cfg = SynthConfig()
    with pytest.raises(AttributeError):
        cfg.grid = 4  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown synth config keys \\['colour'\\]"):
        SynthConfig.from_dict({"colour": "blue"})
    assert SynthConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_writes_and_refuses_a_non_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--seed", "3", "--n-sun", "10", "--n-son", "10",
            "--size", "48x40", "--grid", "4", "--workers", "1", "--quiet"]
    assert main(args) == 0
    assert "noise floor" in capsys.readouterr().out
    with Image.open(out / "son" / "images" / f"{_votes(out)[0][0]}.jpg") as im:
        assert im.size == (48, 40)
    before = (out / "son" / "votes.tsv").read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and "Traceback" not in err
    (out / "notes.txt").write_text("keep me")
    assert main([*args, "--overwrite"]) == 0
    assert (out / "son" / "votes.tsv").read_bytes() == before and (out / "notes.txt").is_file()


def test_cli_overwrite_never_deletes_foreign_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sun").mkdir()
    (tmp_path / "sun" / "precious.jpg").write_bytes(b"x")
    args = ["synth", "--out", str(tmp_path), "--n-sun", "10", "--n-son", "10", "--size", "32",
            "--grid", "4", "--quiet", "--overwrite"]
    assert main(args) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp_path / "sun" / "precious.jpg").read_bytes() == b"x"


@pytest.mark.parametrize("flag,value,words", [
    ("--size", "big", ["WIDTHxHEIGHT", "big"]),
    ("--attributes", "ocean,unicorns", ["unicorns", "allowed"]),
    ("--n-son", "3", ["n_son", "3"]),
])
def test_cli_bad_values_give_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            flag: str, value: str, words: list[str]) -> None:
    try:
        code = main(["synth", "--out", str(tmp_path / "x"), flag, value, "--quiet"])
    except SystemExit as exc:  # argparse type errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for w in words:
        assert w in err
    assert not (tmp_path / "x" / "truth" / "meta.json").exists()


# --- the project's own loaders read the output back ---------------------------------------------

def test_project_loaders_read_the_output(runs: dict[str, Path]) -> None:
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.son_attributes import SonAttributeSet
    from siam.data.sun_attributes import SunAttributes
    from siam.data.transforms import Preprocessing, eval_transform

    d = runs["a"]
    meta = _meta(d)
    tr = eval_transform(Preprocessing(resize=64, crop=64))
    labels = _mat(d, "attributeLabels_continuous.mat", "labels_cv")
    sets = _mat(d, "trainval_idx.mat", "sets").ravel()
    rows = _votes(d)
    ids, y = _clean_scores(d)
    for i, split in enumerate(("train", "val", "test")):
        sun = SunAttributes(d / "sun", split, transform=tr, attributes=meta["attributes"])
        assert sun.attributes == tuple(meta["attributes"]) and sun.missing == []
        assert sun.rows.tolist() == np.flatnonzero(sets == i).tolist()
        assert np.allclose(sun.labels.numpy(), labels[sun.rows])
        sample = sun[0]
        assert sample.image.shape == (3, 64, 64) and sample.source == "sun"
        son = ScenicOrNot(d / "son", split, transform=tr, with_variance=True)
        block = _split_blocks(meta)[split]
        assert son.ids == ids[block] and son.missing == []
        assert np.allclose(son.scores.numpy(), [float(r[3]) for r in rows[block]])
        # the noise floor is defined on exactly the loader's split
        rmse = np.sqrt(np.mean((y[block] - son.table.average) ** 2))
        assert rmse == pytest.approx(meta["noise_floor_rmse"][split], rel=1e-9)
    son = ScenicOrNot(d / "son", "all", transform=tr)  # a separate test world is evaluated whole
    assert son.ids == ids
    assert np.sqrt(np.mean((y - son.table.average) ** 2)) == pytest.approx(meta["noise_floor_rmse"]["all"], rel=1e-9)
    sun = SunAttributes(d / "sun", "all", transform=tr, attributes=meta["attributes"])
    assert sun.rows.tolist() == list(range(len(sets)))
    evalset = SonAttributeSet(d / "son_attributes.csv", d / "son" / "images", transform=tr)
    assert len(evalset) == meta["son_attributes"]["n"] and evalset.attributes == tuple(meta["attributes"])
    assert evalset[0].image.shape == (3, 64, 64)


# --- re-rendering one scene from its seed (FunnyBirds-style interventions) ----------------------

def _written_jpeg(d: Path, source: str, key: str) -> bytes:
    if source == "son":
        return (d / "son" / "images" / f"{key}.jpg").read_bytes()
    return (d / "sun" / "images" / "synth" / f"scene_{int(key):05d}.jpg").read_bytes()


def _decode(data: bytes) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def _mcu_cover(mask: np.ndarray, block: int = 16) -> np.ndarray:
    """(H, W) bool: the JPEG MCUs (16 x 16 with 4:2:0 chroma) touching ``mask``, grown by 1 px
    (the decoder's chroma upsampling reads one neighbouring chroma sample)."""
    h, w = mask.shape
    cover = np.zeros_like(mask)
    for y in range(0, h, block):
        for x in range(0, w, block):
            if mask[y: y + block, x: x + block].any():
                cover[y: y + block, x: x + block] = True
    grown = cover.copy()
    grown[1:] |= cover[:-1]
    grown[:-1] |= cover[1:]
    grown[:, 1:] |= grown[:, :-1]
    grown[:, :-1] |= grown[:, 1:]
    return grown


def test_render_scene_reproduces_the_written_scene_exactly(runs: dict[str, Path]) -> None:
    d = runs["a"]
    ids, y = _clean_scores(d)
    for source, keys in (("son", ids[:8]), ("sun", ["0", "7", 39])):
        for key in keys:
            scene = syn.render_scene(d, source, key)
            assert scene.image.dtype == np.uint8 and scene.image.shape == (64, 64, 3)
            assert scene.attributes == tuple(_meta(d)["attributes"]) and scene.without == ()
            assert np.array_equal(scene.masks, _masks(d, source, str(key)))
            # the same encoding gives the very bytes generate() wrote
            assert syn.encode_as_written(scene) == _written_jpeg(d, source, str(key))
            assert syn.encode_as_written(scene.image, quality=scene.quality) == _written_jpeg(d, source, str(key))
            if source == "son":
                assert scene.clean_score == pytest.approx(y[ids.index(key)], rel=1e-12)


def test_render_without_an_attribute_changes_only_its_pixels(runs: dict[str, Path]) -> None:
    """Before encoding, the edit differs from the original exactly on the attribute's visible mask
    (tolerance 0 px: drawing has no anti-aliasing); after JPEG encoding, only inside the 16 x 16
    MCUs touching the mask, plus 1 px. Removing i can reveal what it covered: other masks only grow,
    and the clean score drops by exactly <T_i, pool(M_i)> when none grew."""
    d = runs["a"]
    meta = _meta(d)
    templates = np.load(d / "truth" / "templates.npy").astype(np.float64)
    ids, _ = _clean_scores(d)
    pairs = revealed = 0
    for key in ids[:12]:
        scene = syn.render_scene(d, "son", key)
        for k, name in enumerate(scene.attributes):
            if not scene.masks[k].any():
                continue
            edit = syn.render_scene(d, "son", key, without=name)
            pairs += 1
            changed = (edit.image != scene.image).any(-1)
            assert np.array_equal(changed, scene.masks[k]), name  # all of the mask, nothing else
            assert not edit.masks[k].any() and edit.without == (name,)
            others = np.delete(np.arange(len(scene.attributes)), k)
            assert (edit.masks[others] >= scene.masks[others]).all()  # occluded parts may appear
            enc = (_decode(syn.encode_as_written(edit)) != _decode(syn.encode_as_written(scene))).any(-1)
            assert not (enc & ~_mcu_cover(scene.masks[k])).any()
            own = float(np.sum(templates[k] * pool_to_grid(scene.masks[k:k + 1], meta["grid"])[0]))
            recomputed = meta["bias"] + float(np.sum(templates * pool_to_grid(edit.masks, meta["grid"])))
            assert edit.clean_score == pytest.approx(recomputed, abs=1e-9)
            if np.array_equal(edit.masks[others], scene.masks[others]):
                assert edit.clean_score == pytest.approx(scene.clean_score - own, abs=1e-9)
            else:
                revealed += 1
    assert pairs >= 10 and revealed >= 1  # both cases (nothing revealed, something revealed) occur


def test_render_without_several_and_bad_requests(runs: dict[str, Path], tmp_path: Path) -> None:
    d = runs["a"]
    ids, _ = _clean_scores(d)
    scene = syn.render_scene(d, "son", ids[0])
    shown = [n for k, n in enumerate(scene.attributes) if scene.masks[k].any()]
    edit = syn.render_scene(d, "son", int(ids[0]), without=shown)  # IDs as int work too
    assert not edit.masks.any() and edit.drawn == scene.drawn
    with pytest.raises(DatasetError, match="unicorn"):
        syn.render_scene(d, "son", ids[0], without="unicorn")
    with pytest.raises(DatasetError, match="no ScenicOrNot image with ID"):
        syn.render_scene(d, "son", "999999")
    with pytest.raises(DatasetError, match="row index"):
        syn.render_scene(d, "sun", 40)
    with pytest.raises(DatasetError, match="'son' or 'sun'"):
        syn.render_scene(d, "val", 1)
    with pytest.raises(DatasetError, match="missing"):
        syn.render_scene(tmp_path, "son", ids[0])
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "meta.json").write_text('{"attributes": ["trees"]}')
    with pytest.raises(DatasetError, match="not written by siam synth"):
        syn.render_scene(tmp_path, "son", ids[0])
    with pytest.raises(ConfigError, match="quality"):
        syn.encode_as_written(scene.image)


# --- a decorrelated test world; a big test world of the same config --------------------------------

def _presence_draws(cfg: SynthConfig, n: int) -> np.ndarray:
    state = syn._state(0, cfg, None)
    rows = []
    for i in range(n):
        shown = set(syn._sample_present(np.random.default_rng([7, i]), state))
        rows.append([a in shown for a in cfg.attributes])
    return np.asarray(rows, dtype=np.float64), state["marginal"]


def test_decorrelate_keeps_the_marginals_and_drops_cooccurrence() -> None:
    n = 4000
    ordinary, share = _presence_draws(SynthConfig(), n)
    decorrelated, share_d = _presence_draws(SynthConfig(decorrelate=True), n)
    assert np.allclose(share, share_d)
    se = np.sqrt(share * (1 - share) / n)
    assert (np.abs(ordinary.mean(0) - share) < 4.5 * se).all()  # the shares are the ordinary world's
    assert (np.abs(decorrelated.mean(0) - share) < 4.5 * se).all()
    off = ~np.eye(len(share), dtype=bool)
    corr_o, corr_d = np.corrcoef(ordinary.T)[off], np.corrcoef(decorrelated.T)[off]
    assert np.abs(corr_o).max() > 0.3 and np.mean(np.abs(corr_o) > 0.1) > 0.05  # real co-occurrence
    assert np.abs(corr_d).max() < 5 / np.sqrt(n)  # ~0: independent draws
    assert np.abs(corr_d).mean() < 0.3 * np.abs(corr_o).mean()


def test_cli_decorrelate_writes_it_into_meta(tmp_path: Path) -> None:
    args = ["synth", "--out", str(tmp_path / "d"), "--n-sun", "10", "--n-son", "10", "--size", "32",
            "--grid", "4", "--workers", "1", "--quiet", "--decorrelate"]
    assert main(args) == 0
    meta = _meta(tmp_path / "d")
    assert meta["settings"]["decorrelate"] is True and meta["presence"]["decorrelate"] is True
    assert set(meta["presence"]["share"]) == set(meta["attributes"])
    assert SynthConfig.from_dict(meta["settings"]).decorrelate is True
    with pytest.raises(ConfigError, match="decorrelate"):
        SynthConfig(decorrelate="yes")  # type: ignore[arg-type]


def test_a_test_world_of_another_seed_shares_the_planted_truth(runs: dict[str, Path]) -> None:
    a, c = runs["a"], runs["c"]  # same config, seeds 0 and 1
    assert np.array_equal(np.load(a / "truth" / "templates.npy"), np.load(c / "truth" / "templates.npy"))
    ma, mc = _meta(a), _meta(c)
    assert ma["bias"] == mc["bias"] and ma["templates"] == mc["templates"] and ma["settings"] == mc["settings"]
    assert ma["presence"]["share"] == mc["presence"]["share"]
