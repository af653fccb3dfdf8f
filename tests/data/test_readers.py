"""Every reader in ``siam.data`` implements :class:`siam.data.readers.Reader` the same way: the
members exist with the documented types and shapes, items agree with the tables, and a missing
image is listed in ``missing`` and left out. Built on one tiny folder in the real formats."""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import siam.data
from siam.data.csv_folder import CsvDataset
from siam.data.readers import Reader
from siam.data.robust import ImageDataset
from siam.data.samples import Sample
from siam.data.scenic_or_not import ScenicOrNot
from siam.data.son_attributes import SonAttributeSet
from siam.data.sun_attributes import SunAttributes
from siam.data.to_csv import convert_to_csv
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import DatasetError

from ..training.helpers import NAMES, write_folder
from ._fakes import SMALL

# reader -> the id its missing image has (one image of each is deleted in the fixture)
MISSING = {"sun": "1", "son": "1002", "son_attributes": "1002", "csv": "images/sun/s/0003.jpg"}


@pytest.fixture(scope="module")
def readers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ImageDataset]:
    root = tmp_path_factory.mktemp("readers")
    data = write_folder(root / "data", n_sun=8, n_son=8)
    convert_to_csv(data, root / "csv")  # hard links: deleting a source image keeps the CSV copy
    (data / "son_attributes.csv").write_text(
        "id," + ",".join(NAMES) + "\n" + "".join(f"{1000 + i},1,0,{i % 2}\n" for i in range(5)), encoding="utf-8")
    (data / "sun" / "images" / "s" / "0001.jpg").unlink()
    (data / "son" / "images" / "1002.jpg").unlink()
    (root / "csv" / MISSING["csv"]).unlink()
    kw = dict(transform=eval_transform(Preprocessing(**SMALL)), max_missing_fraction=0.5,
              report_path=root / "missing.json")
    builders: dict[str, Callable[[], ImageDataset]] = {
        "sun": lambda: SunAttributes(data / "sun", "all", **kw),
        "son": lambda: ScenicOrNot(data / "son", "all", with_variance=True, **kw),
        "son_attributes": lambda: SonAttributeSet(data / "son_attributes.csv", data / "son" / "images", **kw),
        "csv": lambda: CsvDataset(root / "csv", "all", with_variance=True, **kw),
    }
    out = {}
    for name, build in builders.items():
        with pytest.warns(UserWarning, match="1 of .* images are missing"):
            out[name] = build()
    return out


def _reader_classes() -> set[type]:
    """Every concrete ImageDataset subclass defined in siam.data (all of its modules imported)."""
    for mod in pkgutil.iter_modules(siam.data.__path__):
        if mod.name != "synthetic":  # the deprecated alias of siam.synth (no readers; it warns)
            importlib.import_module(f"siam.data.{mod.name}")
    found, todo = set(), [ImageDataset]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("siam."):
                found.add(sub)
    return found


def test_every_reader_is_covered(readers: dict[str, ImageDataset]) -> None:
    """A new reader fails here until it is added to the fixture (and so to the conformance test)."""
    assert _reader_classes() == {type(r) for r in readers.values()}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_reader_conforms(readers: dict[str, ImageDataset], name: str) -> None:
    ds = readers[name]
    assert isinstance(ds, Reader)
    n = len(ds)
    assert n > 0 and len(ds.ids) == len(ds.paths) == n and len(set(ds.ids)) == n
    assert all(isinstance(i, str) for i in ds.ids) and all(isinstance(p, Path) and p.is_file() for p in ds.paths)
    assert ds.missing == [MISSING[name]] and MISSING[name] not in ds.ids
    assert isinstance(ds.name, str) and ds.name
    assert isinstance(ds.attributes, tuple) and all(isinstance(a, str) for a in ds.attributes)
    if ds.labels is not None:
        assert ds.labels.dtype == torch.float32 and ds.labels.shape == (n, len(ds.attributes))
    for table in (ds.scores, ds.variances):
        if table is not None:
            assert table.dtype == torch.float32 and table.shape == (n,)
    assert [ds.image_path(i) for i in range(n)] == ds.paths and ds.image_path(-1) == ds.paths[-1]
    for bad in (n, -n - 1):
        with pytest.raises(IndexError, match="out of range"):
            ds.image_path(bad)
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    for i in range(n):
        s = ds[i]
        assert isinstance(s, Sample) and s.id == ds.ids[i] and s.source == ds.source
        assert s.image.dtype == torch.float32 and s.image.shape == (3, SMALL["crop"], SMALL["crop"])
        _agrees(s.attributes, ds.labels, i)
        _agrees(s.score, ds.scores, i)
        _agrees(s.variance, ds.variances, i)


def _agrees(value: torch.Tensor | float | None, table: torch.Tensor | None, i: int) -> None:
    """A sample's target is the table's row ``i``; absent (None) only where the table has none
    for it: no table, or NaN there (a CSV image in one file only)."""
    if table is None:
        assert value is None
    elif value is None:
        assert bool(torch.isnan(table[i]).all())
    elif isinstance(value, torch.Tensor):
        assert torch.equal(value, table[i])
    else:
        assert not math.isnan(value) and value == pytest.approx(float(table[i]))


def test_each_reader_holds_the_targets_of_its_format(readers: dict[str, ImageDataset]) -> None:
    """What each format provides, and the defaults of the base for what it does not."""
    have = {name: (ds.attributes, ds.labels is not None, ds.scores is not None, ds.variances is not None)
            for name, ds in readers.items()}
    assert have == {
        "sun": (NAMES, True, False, False),
        "son": ((), False, True, True),
        "son_attributes": (NAMES, True, False, False),
        "csv": (NAMES, True, True, True),
    }
    csv = readers["csv"]  # attribute rows and target rows: both kinds of items are there
    assert any(csv[i].attributes is not None for i in range(len(csv)))
    assert any(csv[i].score is not None for i in range(len(csv)))


def test_layout_readers_pick_the_folder_layout(tmp_path: Path) -> None:
    """son_reader / sun_reader read either layout by its contents, with the same images and labels."""
    from siam.data.readers import son_reader, sun_reader

    data = write_folder(tmp_path / "data", n_sun=8, n_son=8)
    convert_to_csv(data, tmp_path / "csv")
    son = {name: son_reader(tmp_path / name, "all") for name in ("data", "csv")}
    sun = {name: sun_reader(tmp_path / name, "all") for name in ("data", "csv")}
    assert isinstance(son["data"], ScenicOrNot) and isinstance(son["csv"], CsvDataset)
    assert isinstance(sun["data"], SunAttributes) and isinstance(sun["csv"], CsvDataset)
    assert torch.equal(son["data"].scores, son["csv"].scores)
    assert torch.equal(sun["data"].labels, sun["csv"].labels)
    with pytest.raises(DatasetError):
        son_reader(tmp_path / "nothing-here", "all")
