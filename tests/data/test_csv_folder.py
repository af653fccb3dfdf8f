"""The plain CSV folder format: errors that name file, line and column; the same samples as the
SUN / ScenicOrNot readers for converted data; a seeded split that is written and reused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siam.cli import main
from siam.data.csv_folder import (
    CsvDataset,
    CsvFormatError,
    data_layout,
    read_attributes_csv,
    read_targets_csv,
    resolve_splits,
)
from siam.data.samples import collate
from siam.data.scenic_or_not import SON_SPLIT_SIZES, ScenicOrNot
from siam.data.splits import scaled_sizes
from siam.data.sun_attributes import SUN_SPLIT_SIZES, SunAttributes
from siam.data.to_csv import convert_to_csv
from siam.errors import ConfigError, DatasetError

from ..training.helpers import NAMES, write_folder

SIZE = 8


def _write(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def _folder(root: Path, n: int = 6, *, split: bool = True) -> Path:
    """n images img/0.png..; attributes.csv for images 0..n-2, targets.csv for 1..n-1 (overlap)."""
    (root / "img").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((SIZE, SIZE, 3), 20 * i, np.uint8)).save(root / "img" / f"{i}.png")
    splits = ["train", "train", "val", "test", "train", "train", "val", "test"]
    head = ["path", "split"] if split else ["path"]
    attrs = [head + list(NAMES)]
    for i in range(n - 1):
        attrs.append([f"img/{i}.png"] + ([splits[i]] if split else []) + [str(i / 10), "0", "1"])
    targets = [head + ["beauty", "beauty_variance"]]
    for i in range(1, n):
        targets.append([f"img/{i}.png"] + ([splits[i]] if split else []) + [str(2.0 + i), "0.5"])
    _write(root / "attributes.csv", attrs)
    _write(root / "targets.csv", targets)
    return root


def _edit(path: Path, line: int, column: str, value: str) -> None:
    rows = list(csv.reader(open(path, newline="")))
    rows[line - 1][rows[0].index(column)] = value
    _write(path, rows)


# Each case edits one cell (file, line, column -> value) and expects that place in the error.
CELL_ERRORS = {
    "value above 1": ("attributes.csv", 3, "green", "1.5", "outside [0, 1]"),
    "negative value": ("attributes.csv", 2, "blue", "-0.1", "outside [0, 1]"),
    "non-numeric attribute": ("attributes.csv", 4, "red", "lots", "not a fraction"),
    "non-numeric target": ("targets.csv", 2, "beauty", "pretty", "not a number"),
    "empty target": ("targets.csv", 5, "beauty", "", "not a number"),
    "negative variance": ("targets.csv", 3, "beauty_variance", "-1", "negative"),
    "unknown split name": ("attributes.csv", 2, "split", "training", "unknown split name 'training'"),
    "unknown split in targets": ("targets.csv", 4, "split", "Test", "allowed: train, val, test"),
    "duplicate path": ("targets.csv", 4, "path", "img/2.png", "duplicate path 'img/2.png' (first on line 3)"),
    "path outside the folder": ("attributes.csv", 3, "path", "../x.png", "not a relative path"),
    "missing image": ("attributes.csv", 3, "path", "img/nope.png", "image 'img/nope.png' not found"),
    "splits disagree": ("targets.csv", 2, "split", "test", "is 'test' here but 'train'"),
}


@pytest.mark.parametrize("case", sorted(CELL_ERRORS))
def test_every_cell_error_names_file_line_and_column(tmp_path: Path, case: str) -> None:
    file, line, column, value, why = CELL_ERRORS[case]
    root = _folder(tmp_path / "d")
    _edit(root / file, line, column, value)
    with pytest.raises(CsvFormatError) as err:
        CsvDataset(root, "all", max_missing_fraction=0.0)
    e = err.value
    assert isinstance(e, DatasetError)
    assert (Path(e.file).name, e.line, e.column) == (file, line, column)
    assert f"{file}, line {line}, column {column!r}" in str(e) and why in str(e)


HEADER_ERRORS = {
    # (file, new content, line, column, message); the column is the one at fault in the header.
    "missing path column": ("targets.csv", "file,beauty\nimg/1.png,3\n", 1, "path", "no 'path' column"),
    "variance of an unknown target": ("targets.csv", "path,beauty,calm,quiet_variance\nimg/1.png,3,4,1\n", 1,
                                      "quiet_variance", "the targets are ['beauty', 'calm']"),
    "variance without its target": ("targets.csv", "path,beauty,noise_variance\nimg/1.png,3,1\n", 1,
                                    "noise_variance", "without its target"),
    "repeated column": ("attributes.csv", "path,red,red\nimg/0.png,0,1\n", 1, "red", "repeated"),
    "no attribute columns": ("attributes.csv", "path,split\nimg/0.png,train\n", 1, None, "no attribute columns"),
    # No column is at fault in an empty file or a short row: the error says so by naming none.
    "empty file": ("targets.csv", "\n\n", 1, None, "empty file"),
    "short row": ("attributes.csv", "path,red,green\nimg/0.png,0\n", 2, None, "2 fields, the header has 3"),
}


@pytest.mark.parametrize("case", sorted(HEADER_ERRORS))
def test_header_and_row_errors_name_file_line_and_column(tmp_path: Path, case: str) -> None:
    file, text, line, column, why = HEADER_ERRORS[case]
    root = _folder(tmp_path / "d")
    (root / file).write_text(text)
    with pytest.raises(CsvFormatError) as err:
        CsvDataset(root, "all")
    e = err.value
    assert (Path(e.file).name, e.line, e.column) == (file, line, column)
    assert f"{file}, line {line}" in str(e) and why in str(e)
    if column is not None:
        assert f"column {column!r}" in str(e)


def _two_targets(root: Path) -> Path:
    """_folder with a second target 'calm' (no variance column) in targets.csv."""
    _folder(root)
    rows = list(csv.reader(open(root / "targets.csv", newline="")))
    _write(root / "targets.csv", [rows[0] + ["calm"]] + [r + [str(10 - i)] for i, r in enumerate(rows[1:])])
    return root


# Cells of a two-target file (beauty, beauty_variance, calm): each error names its place.
TWO_TARGET_ERRORS = {
    "non-numeric value in the 2nd target": ({(3, "calm"): "quiet"}, 3, "calm", "'quiet' is not a number"),
    "no value for any target": ({(4, "beauty"): "", (4, "beauty_variance"): "", (4, "calm"): " "}, 4, "beauty",
                                "no target value: every target cell of this row is empty"),
    "variance without its value": ({(2, "beauty"): ""}, 2, "beauty_variance", "a variance without a value"),
    "value without its variance": ({(5, "beauty_variance"): ""}, 5, "beauty_variance", "not a number"),
}


@pytest.mark.parametrize("case", sorted(TWO_TARGET_ERRORS))
def test_two_target_cell_errors_name_file_line_and_column(tmp_path: Path, case: str) -> None:
    edits, line, column, why = TWO_TARGET_ERRORS[case]
    root = _two_targets(tmp_path / "d")
    for (at, col), value in edits.items():
        _edit(root / "targets.csv", at, col, value)
    with pytest.raises(CsvFormatError) as err:
        CsvDataset(root, "all")
    e = err.value
    assert (Path(e.file).name, e.line, e.column) == ("targets.csv", line, column)
    assert f"targets.csv, line {line}, column {column!r}" in str(e) and why in str(e)


def test_several_targets_are_read_with_their_variances_and_empty_cells(tmp_path: Path) -> None:
    root = _two_targets(tmp_path / "d")
    _edit(root / "targets.csv", 3, "beauty", "")  # img/2.png: calm only
    _edit(root / "targets.csv", 3, "beauty_variance", "")
    _edit(root / "targets.csv", 5, "calm", "")  # img/4.png: beauty only
    table = read_targets_csv(root / "targets.csv")
    assert table.names == ("beauty", "calm") and table.name == "beauty" and table.has_variance == (True, False)
    assert table.values.shape == (5, 2) and np.isnan(table.values[1, 0]) and np.isnan(table.values[3, 1])
    assert table.values[0].tolist() == [3.0, 10.0] and table.values[4].tolist() == [7.0, 6.0]
    assert np.isnan(table.variances[:, 1]).all() and table.variances[0, 0] == 0.5
    ds = CsvDataset(root, "all", rows="targets", with_variance=True)
    assert ds.target_names == ("beauty", "calm") and ds.all_scores.shape == (5, 2)
    by_id = {s.id: s for s in ds}
    assert by_id["img/1.png"].scores == (3.0, 10.0) and by_id["img/1.png"].variances == (0.5, None)
    assert by_id["img/2.png"].scores == (None, 9.0) and by_id["img/2.png"].score is None
    assert by_id["img/2.png"].variances == (None, None)
    assert by_id["img/4.png"].scores == (6.0, None) and by_id["img/4.png"].score == 6.0
    batch = collate([by_id[f"img/{i}.png"] for i in (1, 2, 4)])
    assert batch.scores.tolist() == [[3.0, 10.0], [0.0, 9.0], [6.0, 0.0]]
    assert batch.scores_mask.tolist() == [[True, True], [False, True], [True, False]]
    assert batch.score_mask.tolist() == [True, False, True] and batch.score.tolist() == [3.0, 0.0, 6.0]
    assert batch.variances_mask.tolist() == [[True, False], [False, False], [True, False]]
    # One target: an empty cell is still an error (a row without its only value).
    with pytest.raises(CsvFormatError, match="line 3, column 'beauty'.*not a number"):
        _edit(root / "targets.csv", 3, "calm", "")
        _write(root / "targets.csv", [r[:4] for r in csv.reader(open(root / "targets.csv", newline=""))])
        CsvDataset(root, "all")


def test_missing_images_below_the_limit_are_reported_and_left_out(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    (root / "img" / "2.png").unlink()
    report = tmp_path / "missing.json"
    with pytest.warns(UserWarning, match="1 of 6 images are missing"):
        ds = CsvDataset(root, "all", max_missing_fraction=0.5, report_path=report)
    assert ds.ids == [f"img/{i}.png" for i in (0, 1, 3, 4, 5)] and ds.missing == ["img/2.png"]
    assert '"img/2.png"' in report.read_text()
    assert not (root / "missing_images_all.json").exists()  # the data folder is not written


def test_rows_roles_and_sample_fields(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    ds = CsvDataset(root, "all", rows="any", with_variance=True)
    assert ds.attributes == NAMES and ds.target == "beauty" and len(ds) == 6
    first, both, last = ds[0], ds[1], ds[5]
    assert first.attributes.tolist() == [0.0, 0.0, 1.0] and first.score is None and first.variance is None
    assert both.score == 3.0 and both.variance == 0.5 and both.attributes is not None
    assert torch.allclose(both.attributes, torch.tensor([0.1, 0.0, 1.0]))
    assert last.attributes is None and last.score == 7.0 and last.source == "csv" and last.id == "img/5.png"
    assert [s.id for s in CsvDataset(root, "all", rows="targets")] == [f"img/{i}.png" for i in range(1, 6)]
    train = CsvDataset(root, "train", rows="attributes")
    assert train.ids == ["img/0.png", "img/1.png", "img/4.png"] and train.lines == [2, 3, 6]
    assert CsvDataset(root, "train", rows="attributes", attributes=["blue", "red"])[1].attributes.tolist() == \
        pytest.approx([1.0, 0.1])
    with pytest.raises(CsvFormatError, match="beauty_variance.*absent"):
        (root / "targets.csv").write_text("path,beauty\nimg/1.png,3\n")
        CsvDataset(root, "all", with_variance=True)


def test_layout_detection(tmp_path: Path) -> None:
    assert data_layout(_folder(tmp_path / "csv")) == "csv"
    assert data_layout(write_folder(tmp_path / "synth", n_sun=2, n_son=2)) == "synth"
    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "photos").mkdir()
    with pytest.raises(DatasetError, match="neither layout: expected attributes.csv and/or targets.csv"):
        data_layout(tmp_path / "neither")
    (tmp_path / "csv" / "sun").mkdir()
    with pytest.raises(DatasetError, match="both layouts"):
        data_layout(tmp_path / "csv")


# --- splits -------------------------------------------------------------------------------------


def test_seeded_split_has_the_papers_proportions_is_reproducible_and_written(tmp_path: Path) -> None:
    n_attr_only, n_scored = 60, 40
    root = tmp_path / "d"
    (root / "img").mkdir(parents=True)
    attrs, targets = [["path", "a"]], [["path", "y"]]
    for i in range(n_attr_only + n_scored):
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / "img" / f"{i:03d}.png")
        (attrs if i < n_attr_only else targets).append([f"img/{i:03d}.png", "0.5" if i < n_attr_only else "1"])
    attrs.append(["img/099.png", "1"])  # scored and labelled: takes the scored images' split
    _write(root / "attributes.csv", attrs)
    _write(root / "targets.csv", targets)
    before = sorted(p.name for p in root.iterdir())
    out = tmp_path / "run" / "splits.csv"
    a, t = read_attributes_csv(root / "attributes.csv"), read_targets_csv(root / "targets.csv")
    drawn = resolve_splits(a, t, seed=3, splits_file=out)
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written into the data
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["path", "split"] and dict(rows[1:]) == drawn and len(drawn) == 100
    count = lambda paths: tuple(sum(drawn[p] == s for p in paths) for s in ("train", "val", "test"))  # noqa: E731
    assert count(t.paths) == scaled_sizes(n_scored, SON_SPLIT_SIZES) == (30, 4, 6)
    assert count(a.paths[:n_attr_only]) == scaled_sizes(n_attr_only, SUN_SPLIT_SIZES) == (48, 6, 6)
    # Reproducible without the file, different for another seed.
    assert resolve_splits(a, t, seed=3) == drawn and resolve_splits(a, t, seed=4) != drawn
    # Reused when present (here edited by hand: the file wins over a new draw).
    moved = next(p for p in t.paths if drawn[p] == "train")
    rows = [[p, "test" if p == moved else s] for p, s in rows[1:]]
    _write(out, [["path", "split"], *rows])
    reused = resolve_splits(a, t, seed=3, splits_file=out)
    assert reused[moved] == "test" and {p: s for p, s in reused.items() if p != moved} == \
        {p: s for p, s in drawn.items() if p != moved}
    ds = CsvDataset(root, "test", rows="targets", splits_file=out)
    assert moved in ds.ids
    # A file that lacks images of the data: a clear error, not a silent redraw.
    _write(out, [["path", "split"], *rows[:-1]])
    with pytest.raises(DatasetError, match="1 images have no split there.*Delete"):
        resolve_splits(a, t, seed=3, splits_file=out)


def test_given_split_column_wins_over_the_draw(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    out = tmp_path / "splits.csv"
    assert resolve_splits(read_attributes_csv(root / "attributes.csv"), read_targets_csv(root / "targets.csv"),
                          splits_file=out)["img/3.png"] == "test"
    assert not out.exists()  # nothing drawn, nothing written


# --- conversion ---------------------------------------------------------------------------------


def test_converted_folder_gives_the_same_samples_as_the_sun_and_scenicornot_readers(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=20, n_son=24)
    (data / "son" / "images" / "1003.jpg").unlink()  # a missing photo stays missing
    assert main(["data", "to-csv", "--data", str(data), "--out", str(tmp_path / "csv")]) == 0
    csv_dir = tmp_path / "csv"
    assert (csv_dir / "images" / "sun" / "s" / "0000.jpg").stat().st_ino == \
        (data / "sun" / "images" / "s" / "0000.jpg").stat().st_ino  # hard link, no copy
    total = {"sun": 0, "son": 0}
    for split in ("train", "val", "test"):
        pairs = [
            (SunAttributes(data / "sun", split), CsvDataset(csv_dir, split, rows="attributes"), "sun"),
            (ScenicOrNot(data / "son", split, with_variance=True, max_missing_fraction=0.1),
             CsvDataset(csv_dir, split, rows="targets", with_variance=True), "son"),
        ]
        for ref, ds, kind in pairs:
            assert len(ref) == len(ds)
            total[kind] += len(ds)
            for i in range(len(ref)):
                x, y = ref[i], ds[i]
                assert Path(ref.image_path(i)).name == Path(ds.image_path(i)).name
                assert torch.equal(x.image, y.image)
                assert (x.score, x.variance) == (y.score, y.variance)
                assert (x.attributes is None) == (y.attributes is None)
                if x.attributes is not None:
                    assert torch.equal(x.attributes, y.attributes)
    assert total == {"sun": 20, "son": 23}


def test_derived_target_is_written_and_read_as_a_second_target(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=4, n_son=6)
    res = convert_to_csv(data, tmp_path / "csv", copy=True, target="scenic", derived_target="reversed")
    assert res.copied == 10 and res.linked == 0
    rows = list(csv.DictReader(open(tmp_path / "csv" / "targets.csv")))
    assert list(rows[0]) == ["path", "split", "scenic", "scenic_variance", "scenic_reversed"]
    assert all(float(r["scenic"]) + float(r["scenic_reversed"]) == pytest.approx(11.0) for r in rows)
    ds = CsvDataset(tmp_path / "csv", "all", rows="targets", with_variance=True)
    assert ds.target_names == ("scenic", "scenic_reversed")
    assert all(s.scores[0] + s.scores[1] == pytest.approx(11.0) and s.variances[1] is None for s in ds)
    with pytest.raises(ConfigError, match="outside --data"):
        convert_to_csv(data, data / "csv")
