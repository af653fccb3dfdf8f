from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from siam.data.robust import SkipBadImages, check_missing_images, read_bad_images
from siam.data.samples import collate
from siam.data.scenic_or_not import ScenicOrNot
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import DatasetError
from tests.data._fakes import SMALL, bad_files, write_images

TF = eval_transform(Preprocessing(**SMALL))
REASONS = {
    "truncated": "truncated", "zero_bytes": "empty file", "text": "text file", "bad_png_crc": "bad crc",
}


@pytest.fixture()
def son_with_bad(tmp_path: Path) -> tuple[ScenicOrNot, dict[str, str]]:
    """40 photos, 4 of them replaced by one bad file of each kind; returns (dataset, path -> kind)."""
    root = tmp_path / "son"
    ids = list(range(100, 140))
    lines = ["ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI"]
    lines += [f"{i}\t50\t-3\t{1 + i % 9}\t1.0\t4,5,6\thttp://www.geograph.org.uk/photo/{i}" for i in ids]
    root.mkdir()
    (root / "votes.tsv").write_text("\n".join(lines) + "\n")
    write_images(root / "images", [f"{i}.jpg" for i in ids])
    bad: dict[str, str] = {}
    for k, (kind, data) in enumerate(bad_files().items()):
        path = root / "images" / f"{ids[3 + 9 * k]}.jpg"
        path.write_bytes(data)
        bad[str(path)] = kind
    ds = ScenicOrNot(root, "all", transform=TF)
    assert len(ds) == 40
    return ds, bad


def test_each_bad_kind_is_skipped_logged_and_counted(
    son_with_bad: tuple[ScenicOrNot, dict[str, str]], tmp_path: Path
) -> None:
    ds, bad = son_with_bad
    log = tmp_path / "run" / "bad_images.jsonl"
    wrapped = SkipBadImages(ds, log_path=log, max_bad_fraction=0.2)
    torch.manual_seed(0)
    bad_ids = {Path(p).stem for p in bad}
    for epoch in range(2):
        samples = [wrapped[i] for i in range(len(wrapped))]
        assert len(samples) == 40
        assert not bad_ids & {s.id for s in samples}  # substitutes only
        assert all(s.image.shape == (3, 32, 32) for s in samples)
        entries = read_bad_images(log)
        assert len(entries) == 4  # logged once, not once per epoch
    assert {e["path"]: e["error"] for e in entries}.keys() == bad.keys()
    for e in entries:
        assert REASONS[bad[e["path"]]] in e["error"].lower()
        assert e["dataset"] == "scenic_or_not:all"
    assert wrapped.bad_count == 4
    # one JSON object per line, with path and error
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and all({"path", "error"} <= json.loads(line).keys() for line in lines)


def test_a_resumed_run_counts_earlier_bad_images(
    son_with_bad: tuple[ScenicOrNot, dict[str, str]], tmp_path: Path
) -> None:
    ds, bad = son_with_bad
    log = tmp_path / "bad_images.jsonl"
    first = SkipBadImages(ds, log_path=log, max_bad_fraction=0.2)
    for i in range(len(first)):
        first[i]
    resumed = SkipBadImages(ds, log_path=log, max_bad_fraction=0.2)
    assert resumed.bad_count == 4
    assert SkipBadImages(ds, log_path=log, name="another").bad_count == 0
    log.write_text(log.read_text() + '{"path": "cut off by a ki')  # a torn last line is ignored
    assert SkipBadImages(ds, log_path=log, max_bad_fraction=0.2).bad_count == 4


def test_too_many_bad_images_stop_with_a_clear_error(
    son_with_bad: tuple[ScenicOrNot, dict[str, str]], tmp_path: Path
) -> None:
    ds, _ = son_with_bad
    log = tmp_path / "bad_images.jsonl"
    wrapped = SkipBadImages(ds, log_path=log, max_bad_fraction=0.05)  # 2 of 40 allowed
    with pytest.raises(DatasetError) as exc:
        for i in range(len(wrapped)):
            wrapped[i]
    msg = str(exc.value)
    assert "3 of 40 images failed to decode (7.5%)" in msg
    assert "max_bad_fraction=0.05" in msg and str(log) in msg
    assert len(read_bad_images(log)) == 3
    with pytest.raises(DatasetError, match="max_bad_fraction must be a fraction"):
        SkipBadImages(ds, log_path=log, max_bad_fraction=1.5)


def test_dataloader_workers_keep_batches_full_and_share_the_log(
    son_with_bad: tuple[ScenicOrNot, dict[str, str]], tmp_path: Path
) -> None:
    ds, bad = son_with_bad
    log = tmp_path / "bad_images.jsonl"
    wrapped = SkipBadImages(ds, log_path=log, max_bad_fraction=0.2)
    loader = DataLoader(wrapped, batch_size=8, num_workers=2, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0), shuffle=True)
    batches = list(loader)
    assert [len(b) for b in batches] == [8] * 5
    assert all(b.score_mask.all() for b in batches)
    entries = read_bad_images(log)
    assert {e["path"] for e in entries} == set(bad)  # every bad file, from both workers
    assert wrapped.bad_count == 4


def test_other_errors_are_not_swallowed(tmp_path: Path) -> None:
    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> object:
            raise KeyError("a bug, not a bad image")

    with pytest.raises(KeyError, match="a bug"):
        SkipBadImages(Broken(), log_path=tmp_path / "b.jsonl")[0]
    assert not (tmp_path / "b.jsonl").exists()


def test_check_missing_images_report(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    paths = [tmp_path / "a.jpg", None, tmp_path / "gone.jpg"]
    report = tmp_path / "r.json"
    with pytest.warns(UserWarning, match="2 of 3 images are missing"):
        keep = check_missing_images(["a", "b", "c"], paths, dataset="d", max_fraction=0.7, report_path=report)
    assert keep == [True, False, False]
    content = json.loads(report.read_text())
    assert content == {"dataset": "d", "total": 3, "missing": 2, "fraction": pytest.approx(2 / 3),
                       "max_fraction": 0.7, "ids": ["b", "c"]}
    kept = check_missing_images(["a"], paths[:1], dataset="d", max_fraction=0, report_path=tmp_path / "n.json")
    assert kept == [True]
    assert not (tmp_path / "n.json").exists()  # nothing missing, nothing written
    blocked = tmp_path / "a.jpg" / "r.json"  # parent is a file: the report cannot be written
    with pytest.raises(DatasetError, match="cannot be written .*pass a writable report_path"):
        check_missing_images(["b"], [None], dataset="d", max_fraction=1, report_path=blocked)


def test_index_errors_pass_through(son_with_bad: tuple[ScenicOrNot, dict[str, str]]) -> None:
    ds, _ = son_with_bad
    with pytest.raises(IndexError, match="out of range"):
        ds[40]
    assert np.isclose(ds[-1].score, ds[39].score)
