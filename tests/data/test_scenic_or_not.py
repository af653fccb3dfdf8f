from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from siam.data.images import load_image
from siam.data.scenic_or_not import (
    CURRENT_COLUMNS,
    HISTORICAL_COLUMNS,
    ScenicOrNot,
    index_images,
    read_votes,
    son_split_rows,
)
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import DatasetError
from tests.data._fakes import SMALL, write_images

TF = eval_transform(Preprocessing(**SMALL))


def _photo_numbers(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Geograph photo number per ID, as in the real file (ID 1 is photo 7): never the row's own
    ID, in another order than the IDs, and half of them equal to some other row's ID."""
    step = int(np.diff(np.sort(ids)).min()) if len(ids) > 1 else 1
    pool = np.sort(ids) + step * (len(ids) // 2)  # overlaps the upper half of the IDs
    photos = rng.permutation(pool)
    for k in np.flatnonzero(photos == ids):  # no row may keep its own ID as photo number
        photos[[k, k - 1]] = photos[[k - 1, k]]
    assert (photos != ids).all()
    return photos


def _rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    """n photos with shuffled, non-contiguous IDs, photo numbers that differ from them, 1..8 votes each."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + 7 * n, 7))
    photos = _photo_numbers(ids, rng)
    out = []
    for pid, photo in zip(ids, photos):
        votes = rng.integers(1, 11, size=int(rng.integers(1, 9)))
        out.append(
            dict(
                id=int(pid), lat=50 + rng.random(), lon=-3 + rng.random(), votes=[int(v) for v in votes],
                average=float(votes.mean()), variance=float(votes.var()), photo=int(photo),
                uri=f"http://www.geograph.org.uk/photo/{int(photo)}",
            )
        )
    return out


def write_votes(path: Path, rows: list[dict[str, object]], fmt: str = "historical", *,
                counts: bool = False, columns: list[str] | None = None) -> None:
    cols = columns or list(HISTORICAL_COLUMNS if fmt == "historical" else CURRENT_COLUMNS)
    lines = ["\t".join(cols)]
    for r in rows:
        votes = r["votes"]
        assert isinstance(votes, list)
        cell = {
            "ID": str(r["id"]), "Lat": f"{r['lat']:.5f}", "Lon": f"{r['lon']:.5f}",
            "Average": f"{r['average']:.6f}", "Variance": f"{r['variance']:.6f}",
            "Votes": str(len(votes)) if counts else ",".join(map(str, votes)),
            "Geograph URI": str(r["uri"]),
        }
        lines.append("\t".join(cell.get(c, "") for c in cols))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _usable(rows: list[dict[str, object]], min_votes: int = 3, key: str = "id") -> list[dict[str, object]]:
    usable = [r for r in rows if len(r["votes"]) >= min_votes]  # type: ignore[arg-type]
    return sorted(usable, key=lambda r: r[key])  # type: ignore[arg-type, return-value]


@pytest.fixture()
def son(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    """60 rows, about 45 usable; images in nested subfolders and flat."""
    rows = _rows(60)
    root = tmp_path / "son"
    write_votes(root / "votes.tsv", rows)
    names = [f"{'sub/a' if k % 3 == 0 else 'sub/b/c' if k % 3 == 1 else ''}/{r['id']}.jpg".lstrip("/")
             for k, r in enumerate(rows)]
    write_images(root / "images", names)
    return root, rows


# --- votes.tsv -----------------------------------------------------------------------------------

def test_historical_votes_filtered_and_ordered_by_id(tmp_path: Path) -> None:
    rows = _rows(40)
    write_votes(tmp_path / "votes.tsv", rows)
    table = read_votes(tmp_path / "votes.tsv")
    usable = _usable(rows)
    assert table.format == "historical"
    assert len(table) == len(usable) and table.dropped == 40 - len(usable) > 0
    np.testing.assert_array_equal(table.ids, [r["id"] for r in usable])
    np.testing.assert_allclose(table.average, [r["average"] for r in usable], atol=1e-6)
    np.testing.assert_allclose(table.variance, [r["variance"] for r in usable], atol=1e-6)
    np.testing.assert_array_equal(table.votes, [len(r["votes"]) for r in usable])  # type: ignore[arg-type]
    assert (table.votes >= 3).all() and np.isfinite(table.lat).all()
    five = read_votes(tmp_path / "votes.tsv", min_votes=5)
    assert len(five) == len(_usable(rows, 5)) < len(table)


def test_current_export_is_keyed_by_the_photo_number_in_the_uri(tmp_path: Path) -> None:
    rows = _rows(40)
    write_votes(tmp_path / "hist.tsv", rows, "historical")
    # current export: no ID column, and the columns in another order
    order = ["Geograph URI", "Votes", "Average", "Variance", "Lat", "Lon"]
    write_votes(tmp_path / "cur.tsv", rows, columns=order)
    hist, cur = read_votes(tmp_path / "hist.tsv"), read_votes(tmp_path / "cur.tsv")
    assert (hist.format, cur.format) == ("historical", "current")
    # historical: keyed (and ordered) by ID, with each row's photo number kept from its URI
    usable = _usable(rows)
    np.testing.assert_array_equal(hist.ids, [r["id"] for r in usable])
    np.testing.assert_array_equal(hist.photos, [r["photo"] for r in usable])
    assert (hist.ids != hist.photos).all()
    # current: keyed and ordered by photo number, a different order of the same rows
    by_photo = _usable(rows, key="photo")
    np.testing.assert_array_equal(cur.ids, [r["photo"] for r in by_photo])
    np.testing.assert_array_equal(cur.photos, cur.ids)
    np.testing.assert_allclose(cur.average, [r["average"] for r in by_photo], atol=1e-6)
    assert not np.array_equal(cur.average, hist.average)  # the orders differ, so would the splits
    same_row = {int(p): k for k, p in enumerate(cur.ids)}
    for key in ("average", "variance", "votes", "lat", "lon"):
        np.testing.assert_array_equal(getattr(cur, key)[[same_row[int(p)] for p in hist.photos]], getattr(hist, key))


def test_votes_column_may_hold_counts(tmp_path: Path) -> None:
    rows = _rows(40)
    write_votes(tmp_path / "votes.tsv", rows, counts=True)
    table = read_votes(tmp_path / "votes.tsv")
    np.testing.assert_array_equal(table.ids, [r["id"] for r in _usable(rows)])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ID\tLat\tLon\tScore\tVotes\n", r"lacks \['Average', 'Variance', 'Geograph URI'\]"),
        ("Lat\tLon\tAverage\tVariance\tVotes\n", r"lacks \['Geograph URI'\]"),
        ("", "empty file"),
        ("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n1\t50\t-3\t5\t1\n", "line 2: 5 fields"),
        ("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n1\t50\t-3\tgood\t1\t5,6,7\tu\n",
         "line 2: Average 'good' is not a number"),
        ("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n1\t50\t-3\t5\t1\t5,6,7\tu\n"
         "1\t50\t-3\t5\t1\t5,6,7\tu\n", "photo ID 1 appears on lines 2 and 3"),
        ("Lat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n50\t-3\t5\t1\t5,6,7\thttp://x/photo/\n",
         "cannot read a photo ID from the Geograph URI"),
        ("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\nx1\t50\t-3\t5\t1\t5,6,7\tu\n",
         "line 2: ID 'x1' is not an integer"),
    ],
)
def test_malformed_votes_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "votes.tsv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=expected):
        read_votes(path)


def test_wrong_header_names_what_is_found_and_expected(tmp_path: Path) -> None:
    path = tmp_path / "votes.tsv"
    path.write_text("photo\tmean\n1\t5\n")
    with pytest.raises(DatasetError) as exc:
        read_votes(path)
    msg = str(exc.value)
    assert "['photo', 'mean']" in msg and str(list(HISTORICAL_COLUMNS)) in msg
    assert str(list(CURRENT_COLUMNS)) in msg
    with pytest.raises(DatasetError, match="votes file not found"):
        read_votes(tmp_path / "nope.tsv")


# --- splits --------------------------------------------------------------------------------------

def test_paper_split_is_consecutive_blocks_of_the_first_200000() -> None:
    n = 217_000
    train, val, test = (son_split_rows(n, s) for s in ("train", "val", "test"))
    np.testing.assert_array_equal(train, np.arange(150_000))
    np.testing.assert_array_equal(val, np.arange(150_000, 170_000))
    np.testing.assert_array_equal(test, np.arange(170_000, 200_000))
    assert len(son_split_rows(n, "all")) == n


def test_fewer_rows_keep_75_10_15() -> None:
    assert [len(son_split_rows(1000, s)) for s in ("train", "val", "test")] == [750, 100, 150]
    np.testing.assert_array_equal(son_split_rows(1000, "val"), np.arange(750, 850))
    assert [len(son_split_rows(40, s, (10, 2, 3))) for s in ("train", "val", "test")] == [10, 2, 3]
    with pytest.raises(DatasetError, match="3 non-negative integers"):
        son_split_rows(40, "train", (10, 2))


def test_dataset_follows_id_order_and_returns_scores(son: tuple[Path, list[dict[str, object]]]) -> None:
    root, rows = son
    usable = _usable(rows)
    n = len(usable)
    sets = {s: ScenicOrNot(root, s, transform=TF) for s in ("train", "val", "test")}
    sizes = [len(d) for d in sets.values()]
    val_n, test_n = round(n * 0.1), round(n * 0.15)
    assert sizes == [n - val_n - test_n, val_n, test_n]
    ids = [i for d in sets.values() for i in d.ids]
    assert ids == [str(r["id"]) for r in usable]  # consecutive blocks in ID order
    ds = sets["val"]
    by_id = {str(r["id"]): r for r in rows}
    for i in range(len(ds)):
        s = ds[i]
        assert s.source == "son" and s.attributes is None and s.variance is None
        assert s.score == pytest.approx(by_id[s.id]["average"], abs=1e-5)
        path = index_images(root / "images")[s.id]
        torch.testing.assert_close(s.image, TF(load_image(path)), atol=0, rtol=0)
    with_var = ScenicOrNot(root, "test", transform=TF, with_variance=True)
    s = with_var[0]
    assert s.variance == pytest.approx(by_id[s.id]["variance"], abs=1e-5)


def test_images_are_indexed_recursively(son: tuple[Path, list[dict[str, object]]]) -> None:
    root, rows = son
    index = index_images(root / "images")
    assert set(index) == {str(r["id"]) for r in rows}
    assert {p.parent.name for p in index.values()} == {"a", "c", "images"}
    (root / "images" / "zzz").mkdir()  # visited after sub/: the first copy wins
    dup = root / "images" / "zzz" / f"{rows[0]['id']}.JPG"
    dup.write_bytes(index[str(rows[0]["id"])].read_bytes())
    with pytest.warns(UserWarning, match="1 image names occur in more than one subfolder"):
        again = index_images(root / "images")
    assert again[str(rows[0]["id"])] == index[str(rows[0]["id"])]
    with pytest.raises(DatasetError, match="is not a directory"):
        index_images(root / "nothing")


def test_missing_images_counted_reported_and_fatal_above_limit(
    son: tuple[Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    root, rows = son
    usable = _usable(rows)
    index = index_images(root / "images")
    gone = [str(usable[0]["id"]), str(usable[5]["id"])]  # both in train
    for pid in gone:
        index[pid].unlink()
    report = tmp_path / "out" / "missing.json"
    with pytest.warns(UserWarning, match="2 of"):
        ds = ScenicOrNot(root, "train", transform=TF, max_missing_fraction=0.1, report_path=report)
    full = len(son_split_rows(len(usable), "train"))
    assert len(ds) == full - 2 and ds.missing == gone
    assert len(ds.table) == full  # the split itself did not shift
    content = json.loads(report.read_text())
    assert content["ids"] == gone and content["total"] == full and content["missing"] == 2
    assert content["dataset"] == "scenic_or_not:train"
    val = ScenicOrNot(root, "val", transform=TF, max_missing_fraction=0.0)
    assert val.missing == []  # other splits are untouched
    with pytest.raises(DatasetError) as exc:
        ScenicOrNot(root, "train", transform=TF, max_missing_fraction=0.01)
    assert f"2 of {full} images are missing" in str(exc.value)
    assert "missing_images_train.json" in str(exc.value)
    with pytest.raises(DatasetError, match="max_missing_fraction must be a fraction"):
        ScenicOrNot(root, "train", transform=TF, max_missing_fraction=2)


def test_shared_image_index_and_unknown_split(son: tuple[Path, list[dict[str, object]]]) -> None:
    root, _ = son
    index = index_images(root / "images")
    a = ScenicOrNot(root, "test", transform=TF, image_index=index)
    b = ScenicOrNot(root, "test", transform=TF)
    assert a.ids == b.ids and a.paths == b.paths
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        ScenicOrNot(root, "dev", transform=TF)


# --- image names: <ID>.jpg (historical) or <photo number>.jpg (current export) --------------------

def _folder(tmp_path: Path, fmt: str, key: str, rows: list[dict[str, object]]) -> Path:
    """votes.tsv in ``fmt`` and one image per row named by ``key`` ("id" or "photo")."""
    root = tmp_path / f"{fmt}_{key}"
    write_votes(root / "votes.tsv", rows, fmt)
    write_images(root / "images", [f"{r[key]}.jpg" for r in rows])
    return root


def test_current_export_pairs_images_named_by_photo_number(tmp_path: Path) -> None:
    rows = _rows(40)
    root = _folder(tmp_path, "current", "photo", rows)
    ds = ScenicOrNot(root, "all", transform=TF, max_missing_fraction=0.0)
    by_photo = _usable(rows, key="photo")
    assert ds.ids == [str(r["photo"]) for r in by_photo]  # keyed and ordered by photo number
    rows_by_photo = {str(r["photo"]): r for r in rows}
    for i in range(len(ds)):
        s = ds[i]
        assert s.score == pytest.approx(rows_by_photo[s.id]["average"], abs=1e-5)
        assert ds.image_path(i).name == f"{s.id}.jpg"
        torch.testing.assert_close(s.image, TF(load_image(root / "images" / f"{s.id}.jpg")), atol=0, rtol=0)
    # the splits follow photo-number order: not the historical (ID-ordered, paper) blocks
    hist = _folder(tmp_path, "historical", "id", rows)
    cur_train, hist_train = ScenicOrNot(root, "train", transform=TF), ScenicOrNot(hist, "train", transform=TF)
    photo_of_id = {str(r["id"]): str(r["photo"]) for r in rows}
    assert len(cur_train) == len(hist_train)
    assert set(cur_train.ids) != {photo_of_id[i] for i in hist_train.ids}


def test_historical_votes_pair_images_named_by_id(tmp_path: Path) -> None:
    rows = _rows(40)
    root = _folder(tmp_path, "historical", "id", rows)
    ds = ScenicOrNot(root, "all", transform=TF, max_missing_fraction=0.0)
    by_id = {str(r["id"]): r for r in rows}
    assert ds.ids == [str(r["id"]) for r in _usable(rows)]
    for i in range(len(ds)):
        assert ds.image_path(i).name == f"{ds.ids[i]}.jpg"
        assert float(ds.scores[i]) == pytest.approx(by_id[ds.ids[i]]["average"], abs=1e-5)


@pytest.mark.parametrize("how_many", [40, 6])  # a full folder, and a partial download
def test_historical_votes_refuse_a_folder_named_by_photo_number(tmp_path: Path, how_many: int) -> None:
    rows = _rows(40)
    root = _folder(tmp_path, "historical", "photo", rows[:how_many])
    write_votes(root / "votes.tsv", rows, "historical")
    # half the photo numbers are also IDs of other rows: without the check, even a tolerant load
    # would pair those images with the wrong rows' scores
    assert {str(r["photo"]) for r in rows} & {str(r["id"]) for r in rows}
    with pytest.raises(DatasetError) as exc:
        ScenicOrNot(root, "all", transform=TF, max_missing_fraction=1.0)
    msg = str(exc.value)
    assert "named by Geograph photo number" in msg and "historical format" in msg
    assert "<ID>.jpg" in msg and str(root / "images") in msg
    first = _usable(rows)[0]
    assert f"ID {first['id']} is photo {first['photo']}" in msg


def test_current_export_refuses_a_downloaded_folder_named_by_id(tmp_path: Path) -> None:
    rows = _rows(40)
    root = _folder(tmp_path, "current", "id", rows)
    # the record `siam data download` keeps: images/<ID>.jpg came from the row's photo page
    (root / "download_manifest.jsonl").write_text("".join(
        json.dumps({"path": f"images/{r['id']}.jpg", "url": "u", "page": r["uri"], "sha256": "0", "bytes": 1}) + "\n"
        for r in rows
    ))
    with pytest.raises(DatasetError) as exc:
        ScenicOrNot(root, "all", transform=TF, max_missing_fraction=1.0)
    msg = str(exc.value)
    assert "named for another votes.tsv format" in msg and "current format, images named <Geograph photo number>" in msg
    assert "siam data download scenicornot --root" in msg
    # without that record the stems alone cannot tell; the missing-image error names the key
    (root / "download_manifest.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"images are missing.*current format: images are looked up in .* as "
                                           r"<Geograph photo number>\.jpg"):
        ScenicOrNot(root, "all", transform=TF)
