from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from siam.data.images import load_image
from siam.data.splits import scaled_sizes, seeded_split
from siam.data.sun_attributes import (
    SUN_NUM_IMAGES,
    SUN_SPLIT_SIZES,
    SunAttributes,
    read_sun_attribute_names,
    read_sun_labels,
    read_sun_split_file,
    select_columns,
    sun_split_rows,
)
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import DatasetError
from siam.vocab import SUN33
from tests.data._fakes import SMALL, cell, write_sun

TF = eval_transform(Preprocessing(**SMALL))
# A slice of the real database's 102 names, with its spelling.
FULL_DB_NAMES = [
    "sailing/ boating", "hiking", "farming", "trees", "still water", "running water",
    "rock/stone", "wood (not part of a tree)", "ice", "snow", "aged/ worn", "far-away horizon",
]


def _labels(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=(n, k)) / 3.0


# --- the real 33-attribute files -----------------------------------------------------------------

def test_real_sun33_files_load_without_images(sun33_dir: Path) -> None:
    table = read_sun_labels(sun33_dir)
    assert table.labels.shape == (SUN_NUM_IMAGES, 33) == (14_340, 33)
    assert table.names == SUN33
    assert read_sun_attribute_names(sun33_dir) == SUN33
    assert table.labels.dtype == np.float32
    np.testing.assert_allclose(np.unique(table.labels), [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    # every attribute is present somewhere and absent somewhere
    assert (table.labels.max(0) == 1).all() and (table.labels.min(0) == 0).all()


def test_real_sun33_subset_by_normalised_names(sun33_dir: Path) -> None:
    full = read_sun_labels(sun33_dir).labels
    sub = read_sun_labels(sun33_dir, attributes=["Ice/snow", "rock stone", "trees"])
    assert sub.names == ("Ice/snow", "rock stone", "trees")
    cols = [SUN33.index(n) for n in ("ice_snow", "rock_stone", "trees")]
    np.testing.assert_array_equal(sub.labels, full[:, cols])


def test_real_sun33_without_images_mat_says_so(sun33_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"images\.mat: file not found"):
        SunAttributes(sun33_dir)


def test_default_split_sizes_on_the_real_row_count() -> None:
    parts = [sun_split_rows(SUN_NUM_IMAGES, s, seed=0) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [11_414, 1_497, 1_429]
    joined = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(joined), np.arange(SUN_NUM_IMAGES))  # a partition
    np.testing.assert_array_equal(sun_split_rows(SUN_NUM_IMAGES, "val", seed=0), parts[1])
    assert not np.array_equal(sun_split_rows(SUN_NUM_IMAGES, "val", seed=1), parts[1])
    np.testing.assert_array_equal(sun_split_rows(SUN_NUM_IMAGES, "all"), np.arange(SUN_NUM_IMAGES))


def test_split_sizes_scale_for_other_dataset_sizes() -> None:
    assert scaled_sizes(14_340, SUN_SPLIT_SIZES) == SUN_SPLIT_SIZES
    assert scaled_sizes(1000, SUN_SPLIT_SIZES) == (796, 104, 100)
    assert [len(sun_split_rows(1000, s)) for s in ("train", "val", "test")] == [796, 104, 100]
    with pytest.raises(DatasetError, match="only 5 are available"):
        seeded_split(5, (4, 1, 1), seed=0)
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        sun_split_rows(10, "training")


# --- full-database names -------------------------------------------------------------------------

def test_select_from_full_database_names() -> None:
    cols = select_columns(FULL_DB_NAMES, ["rock_stone", "wood", "still_water", "Aged/Worn"], where="f")
    assert cols == [6, 7, 4, 10]
    with pytest.raises(DatasetError) as exc:  # 'far-away horizon' is not 'horizon'
        select_columns(FULL_DB_NAMES, ["horizon"], where="attributes.mat")
    assert "'horizon' matches no column (close: ['far_away_horizon'])" in str(exc.value)
    assert "attributes.mat: cannot select attributes" in str(exc.value)
    with pytest.raises(DatasetError, match=r"'ice_snow' matches no column \(close: \['snow'"):
        select_columns(FULL_DB_NAMES, ["ice_snow"], where="attributes.mat")
    with pytest.raises(DatasetError, match="matches several columns"):
        select_columns(["Ice", "ice", "snow"], ["ice"], where="f")
    assert select_columns(FULL_DB_NAMES, None, where="f") == list(range(len(FULL_DB_NAMES)))


def test_full_database_folder_selects_named_columns(tmp_path: Path) -> None:
    labels = _labels(12, len(FULL_DB_NAMES))
    write_sun(tmp_path, names=FULL_DB_NAMES, labels=labels, images=False)
    table = read_sun_labels(tmp_path, attributes=["trees", "rock_stone", "aged_worn"])
    np.testing.assert_array_equal(table.labels, labels[:, [3, 6, 10]].astype(np.float32))
    assert read_sun_labels(tmp_path).names == tuple(FULL_DB_NAMES)


# --- fake folders --------------------------------------------------------------------------------

@pytest.fixture()
def sun30(tmp_path: Path) -> tuple[Path, np.ndarray, list[str]]:
    labels = _labels(30, 4, seed=1)
    root = tmp_path / "sun"
    names = write_sun(root, names=["trees", "Still water", "rock/stone", "clouds"], labels=labels)
    return root, labels, names


def test_dataset_splits_samples_and_images(sun30: tuple[Path, np.ndarray, list[str]]) -> None:
    root, labels, names = sun30
    sets = {s: SunAttributes(root, s, transform=TF) for s in ("train", "val", "test")}
    assert [len(d) for d in sets.values()] == [24, 3, 3]  # 14,340 proportions of 30
    rows = np.concatenate([d.rows for d in sets.values()])
    np.testing.assert_array_equal(np.sort(rows), np.arange(30))
    ds = sets["val"]
    assert ds.attributes == ("trees", "Still water", "rock/stone", "clouds")
    for i in range(len(ds)):
        s = ds[i]
        row = int(s.id)
        assert s.source == "sun" and s.score is None and s.variance is None
        torch.testing.assert_close(s.attributes, torch.from_numpy(labels[row].astype(np.float32)))
        ref = TF(load_image(root / "images" / names[row]))
        torch.testing.assert_close(s.image, ref, atol=0, rtol=0)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_attribute_selection_in_the_dataset(sun30: tuple[Path, np.ndarray, list[str]]) -> None:
    root, labels, _ = sun30
    ds = SunAttributes(root, "all", transform=TF, attributes=["clouds", "still_water"])
    assert len(ds) == 30 and ds.attributes == ("clouds", "still_water")
    torch.testing.assert_close(ds[5].attributes, torch.tensor(labels[5, [3, 1]], dtype=torch.float32))


def test_split_file_is_used_when_present(tmp_path: Path) -> None:
    sets = np.array([0] * 20 + [1] * 4 + [2] * 6)
    np.random.default_rng(0).shuffle(sets)
    root = tmp_path / "sun"
    write_sun(root, names=["a", "b"], labels=_labels(30, 2), sets=sets)
    for k, split in enumerate(("train", "val", "test")):
        ds = SunAttributes(root, split, transform=TF)
        np.testing.assert_array_equal(ds.rows, np.flatnonzero(sets == k))
    seeded = SunAttributes(root, "val", transform=TF, splits="seed")
    assert len(seeded) == 3 and not np.array_equal(seeded.rows, np.flatnonzero(sets == 1))
    np.testing.assert_array_equal(read_sun_split_file(root / "trainval_idx.mat", 30), sets)


def test_split_file_errors(tmp_path: Path) -> None:
    root = tmp_path / "sun"
    write_sun(root, names=["a", "b"], labels=_labels(30, 2), images=False)
    with pytest.raises(DatasetError, match=r"trainval_idx\.mat: file not found"):
        sun_split_rows(30, "train", splits="file", split_file=root / "trainval_idx.mat")
    scipy.io.savemat(root / "bad.mat", {"sets": np.full((30, 1), 3)})
    with pytest.raises(DatasetError, match=r"must be 0 \(train\), 1 \(val\) or 2 \(test\), got \[3\]"):
        read_sun_split_file(root / "bad.mat", 30)
    scipy.io.savemat(root / "short.mat", {"sets": np.zeros((29, 1))})
    with pytest.raises(DatasetError, match="must hold 30 numbers"):
        read_sun_split_file(root / "short.mat", 30)
    with pytest.raises(DatasetError, match="unknown splits mode"):
        sun_split_rows(30, "train", splits="random")  # type: ignore[arg-type]


def test_char_matrix_names_and_transposed_labels(tmp_path: Path) -> None:
    labels = _labels(6, 3)
    write_sun(tmp_path, names=["trees", "ocean", "ice_snow"], labels=labels.T.copy(), images=False,
              char_matrix=True)
    table = read_sun_labels(tmp_path)
    assert table.names == ("trees", "ocean", "ice_snow")  # padding stripped
    np.testing.assert_array_equal(table.labels, labels.astype(np.float32))


def test_missing_images_reported_then_fatal_above_the_limit(
    sun30: tuple[Path, np.ndarray, list[str]], tmp_path: Path
) -> None:
    root, _, names = sun30
    (root / "images" / names[0]).unlink()
    (root / "images" / names[7]).unlink()
    report = tmp_path / "reports" / "missing.json"
    with pytest.warns(UserWarning, match="2 of 30 images are missing"):
        ds = SunAttributes(root, "all", transform=TF, max_missing_fraction=0.1, report_path=report)
    assert len(ds) == 28 and ds.missing == ["0", "7"]
    assert "0" not in ds.ids and "7" not in ds.ids
    content = json.loads(report.read_text())
    assert content["missing"] == 2 and content["total"] == 30 and content["ids"] == ["0", "7"]
    with pytest.raises(DatasetError) as exc:
        SunAttributes(root, "all", transform=TF, max_missing_fraction=0.05)
    msg = str(exc.value)
    assert "2 of 30 images are missing (6.7%)" in msg and "max_missing_fraction=0.05" in msg
    assert str(root / "missing_images_all.json") in msg
    assert json.loads((root / "missing_images_all.json").read_text())["ids"] == ["0", "7"]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("labels_range", r"outside \[0, 1\]"),
        ("labels_shape", r"has shape \(30, 3\), but attributes\.mat names 2"),
        ("images_count", "images.mat lists 29 images but the label file has 30 rows"),
        ("not_mat", "not a readable MATLAB v5"),
        ("traversal", "expected a relative path inside images/"),
        ("wrong_key", r"expected the variable 'labels_cv', found \['a', 'b'\]"),
        ("no_labels", "none of"),
    ],
)
def test_malformed_folders_give_clear_errors(tmp_path: Path, damage: str, expected: str) -> None:
    root = tmp_path / "sun"
    write_sun(root, names=["a", "b"], labels=_labels(30, 2), images=False)
    lab = root / "attributeLabels_continuous.mat"
    if damage == "labels_range":
        scipy.io.savemat(lab, {"labels_cv": np.full((30, 2), 2.0)})
    elif damage == "labels_shape":
        scipy.io.savemat(lab, {"labels_cv": np.zeros((30, 3))})
    elif damage == "images_count":
        scipy.io.savemat(root / "images.mat", {"images": cell([f"x{i}.jpg" for i in range(29)])})
    elif damage == "not_mat":
        lab.write_text("labels, but as text\n")
    elif damage == "traversal":
        scipy.io.savemat(root / "images.mat", {"images": cell(["../../etc/passwd"] * 30)})
    elif damage == "wrong_key":
        scipy.io.savemat(lab, {"a": np.zeros((30, 2)), "b": np.zeros(1)})
    elif damage == "no_labels":
        lab.unlink()
    with pytest.raises(DatasetError, match=expected):
        SunAttributes(root, "train", transform=TF)


def test_authors_file_names_are_accepted(sun33_dir: Path, tmp_path: Path) -> None:
    shutil.copy(sun33_dir / "attributes.mat", tmp_path / "attributes2.mat")
    shutil.copy(sun33_dir / "attributeLabels_continuous.mat", tmp_path / "attributeLabels_continuous2.mat")
    assert read_sun_labels(tmp_path).labels.shape == (14_340, 33)
