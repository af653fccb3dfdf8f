"""ScenicOrNot (mySociety; Geograph photos of Great Britain rated 1-10) in its published formats.

Layout of ``root``::

    votes.tsv          one row per photo, tab-separated, with a header
    images/**/<ID>.jpg the photos, flat or in any subfolders (indexed once by a recursive scan)

``votes.tsv`` comes in two formats, told apart by the header (names compared after
:func:`siam.vocab.normalize_name`, so case and spaces do not matter):

* historical: ``ID, Lat, Lon, Average, Variance, Votes, Geograph URI``;
* current export: the same without ``ID``; the ID is the number in the Geograph URI
  (``http://www.geograph.org.uk/photo/123456`` -> 123456).

``Votes`` holds the individual ratings (``"7,8,6"``), as in the real file, or, in a file where no
row has a comma in that column, the number of votes. Rows with at least ``min_votes`` votes are
kept and ordered by ID; the first ``sum(split_sizes)`` of them are cut into consecutive blocks
150,000 / 20,000 / 30,000 (paper Sec. 4.1), or into the same 75 / 10 / 15 proportions when fewer
rows are usable (:func:`siam.data.splits.ordered_split`); ``split="all"`` is every usable row.
Images missing from ``images/`` are left out after the split (so splits do not shift), written to a
JSON report (default ``<root>/missing_images_<split>.json``), and fail the load only above
``max_missing_fraction``.

    ScenicOrNot(root, split="train", *, transform=None, min_votes=3,
                split_sizes=SON_SPLIT_SIZES, with_variance=False, votes_file=None,
                image_dir=None, image_index=None, max_missing_fraction=0.05,
                report_path=None, max_megapixels=100.0)

Item ``i`` is a :class:`~siam.data.samples.Sample` with ``image`` (3, H, W), ``score`` = Average,
``variance`` = Variance if ``with_variance`` else None, ``id`` = the ID (as str), ``source="son"``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.data.robust import DEFAULT_MAX_MISSING_FRACTION, ImageDataset, Transform
from siam.data.splits import SPLITS, check_split, ordered_split, scaled_sizes
from siam.errors import DatasetError
from siam.vocab import normalize_name

SON_SPLIT_SIZES: tuple[int, int, int] = (150_000, 20_000, 30_000)
HISTORICAL_COLUMNS: tuple[str, ...] = ("ID", "Lat", "Lon", "Average", "Variance", "Votes", "Geograph URI")
CURRENT_COLUMNS: tuple[str, ...] = HISTORICAL_COLUMNS[1:]
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")

__all__ = [
    "ScenicOrNot",
    "VotesTable",
    "read_votes",
    "index_images",
    "son_split_rows",
    "SON_SPLIT_SIZES",
    "HISTORICAL_COLUMNS",
    "CURRENT_COLUMNS",
]

_URI_ID = re.compile(r"/photo/(\d+)")
_TRAILING_ID = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class VotesTable:
    """Usable rows of a votes.tsv, ascending by ID; arrays are (N,).

    ``format``: ``"historical"`` or ``"current"``; ``votes``: number of votes per photo;
    ``lat``/``lon``: NaN where the file has no such column; ``dropped``: rows under ``min_votes``.
    """

    format: str
    ids: np.ndarray
    average: np.ndarray
    variance: np.ndarray
    votes: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    dropped: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _columns(header: list[str], path: Path) -> tuple[str, dict[str, int]]:
    found = {normalize_name(h): j for j, h in enumerate(header)}
    key = {normalize_name(c): c for c in HISTORICAL_COLUMNS}
    fmt = "historical" if "id" in found else "current"
    need = HISTORICAL_COLUMNS if fmt == "historical" else CURRENT_COLUMNS
    missing = [c for c in need if normalize_name(c) not in found]
    if missing:
        raise DatasetError(
            f"{path}: the header has columns {header} and lacks {missing}. Expected the historical "
            f"format {list(HISTORICAL_COLUMNS)} or the current export {list(CURRENT_COLUMNS)} "
            f"(tab-separated, in any order)"
        )
    return fmt, {key[k]: j for k, j in found.items() if k in key}


def _number(text: str, what: str, line: int, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path}, line {line}: {what} {text!r} is not a number") from None
    if not np.isfinite(value):
        raise DatasetError(f"{path}, line {line}: {what} is {text!r}; expected a finite number")
    return value


def _integer(text: str, what: str, line: int, path: Path) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DatasetError(f"{path}, line {line}: {what} {text!r} is not an integer") from None


def _uri_id(uri: str, line: int, path: Path) -> int:
    m = _URI_ID.search(uri) or _TRAILING_ID.search(uri.strip())
    if m is None:
        raise DatasetError(
            f"{path}, line {line}: cannot read a photo ID from the Geograph URI {uri!r}; "
            f"expected e.g. http://www.geograph.org.uk/photo/123456"
        )
    return int(m.group(1))


def read_votes(path: str | os.PathLike[str], *, min_votes: int = 3) -> VotesTable:
    """Parse a ScenicOrNot votes.tsv (either format); keep rows with >= ``min_votes`` votes."""
    path = Path(path)
    if not isinstance(min_votes, int) or min_votes < 1:
        raise DatasetError(f"min_votes must be an integer >= 1, got {min_votes!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: votes file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the votes file as UTF-8 text ({exc})") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first or "," not in first else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows or not any(c.strip() for c in rows[0]):
        raise DatasetError(
            f"{path}: empty file; expected a header {list(HISTORICAL_COLUMNS)} and one row per photo"
        )
    fmt, col = _columns(rows[0], path)
    body = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(c.strip() for c in r)]
    for n, r in body:
        if len(r) != len(rows[0]):
            raise DatasetError(
                f"{path}, line {n}: {len(r)} fields, the header has {len(rows[0])}"
            )
    vj = col["Votes"]
    as_list = any("," in r[vj] for _, r in body)
    out: dict[str, list[Any]] = {k: [] for k in ("ids", "average", "variance", "votes", "lat", "lon")}
    seen: dict[int, int] = {}
    dropped = 0
    for n, r in body:
        cell = r[vj].strip()
        if as_list:
            ratings = [_number(v, "a vote", n, path) for v in cell.split(",") if v.strip()]
            count = len(ratings)
        else:
            count = _integer(cell or "0", "Votes", n, path)
        if fmt == "historical":
            pid = _integer(r[col["ID"]], "ID", n, path)
        else:
            pid = _uri_id(r[col["Geograph URI"]], n, path)
        if pid in seen:
            raise DatasetError(f"{path}: photo ID {pid} appears on lines {seen[pid]} and {n}")
        seen[pid] = n
        if count < min_votes:
            dropped += 1
            continue
        out["ids"].append(pid)
        out["votes"].append(count)
        out["average"].append(_number(r[col["Average"]], "Average", n, path))
        out["variance"].append(_number(r[col["Variance"]], "Variance", n, path))
        for c in ("Lat", "Lon"):
            j = col.get(c)
            out[c.lower()].append(_number(r[j], c, n, path) if j is not None and r[j].strip() else np.nan)
    order = np.argsort(np.asarray(out["ids"], dtype=np.int64), kind="stable")
    return VotesTable(
        format=fmt,
        ids=np.asarray(out["ids"], dtype=np.int64)[order],
        average=np.asarray(out["average"], dtype=np.float64)[order],
        variance=np.asarray(out["variance"], dtype=np.float64)[order],
        votes=np.asarray(out["votes"], dtype=np.int64)[order],
        lat=np.asarray(out["lat"], dtype=np.float64)[order],
        lon=np.asarray(out["lon"], dtype=np.float64)[order],
        dropped=dropped,
    )


def index_images(image_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Map file stem -> path for every ``*.jpg`` / ``*.jpeg`` below ``image_dir`` (recursive).

    The walk is top-down with files and subfolders in sorted order; when a stem occurs twice the
    first path met wins (and a warning gives the count).
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} is not a directory")
    index: dict[str, Path] = {}
    duplicates = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            stem, suffix = os.path.splitext(fname)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if stem in index:
                duplicates += 1
                continue
            index[stem] = Path(dirpath) / fname
    if duplicates:
        warnings.warn(
            f"{root}: {duplicates} image names occur in more than one subfolder; the first in "
            f"sorted order is used",
            stacklevel=2,
        )
    return index


class ScenicOrNot(ImageDataset):
    """ScenicOrNot photos with their mean rating; signature in the module docstring.

    Attributes: ``table`` (:class:`VotesTable` of this split, missing images included),
    ``scores`` / ``variances`` (n,) float32 tensors, ``missing`` (ids without an image file).
    """

    source = "son"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        min_votes: int = 3,
        split_sizes: Sequence[int] = SON_SPLIT_SIZES,
        with_variance: bool = False,
        votes_file: str | os.PathLike[str] | None = None,
        image_dir: str | os.PathLike[str] | None = None,
        image_index: Mapping[str, Path] | None = None,
        max_missing_fraction: float = DEFAULT_MAX_MISSING_FRACTION,
        report_path: str | os.PathLike[str] | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.root = Path(root)
        check_split(split)
        super().__init__(transform=transform, max_megapixels=max_megapixels, name=f"scenic_or_not:{split}")
        self.with_variance = bool(with_variance)
        table = read_votes(Path(votes_file) if votes_file is not None else self.root / "votes.tsv",
                           min_votes=min_votes)
        rows = son_split_rows(len(table), split, split_sizes)
        if image_index is None:
            image_index = index_images(Path(image_dir) if image_dir is not None else self.root / "images")
        ids = [str(i) for i in table.ids[rows]]
        keep = self._set_images(
            ids,
            [image_index.get(i) for i in ids],
            max_missing_fraction=max_missing_fraction,
            report_path=report_path or self.root / f"missing_images_{split}.json",
        )
        self.table = VotesTable(
            format=table.format,
            **{k: getattr(table, k)[rows] for k in ("ids", "average", "variance", "votes", "lat", "lon")},
            dropped=table.dropped,
        )
        kept = rows[keep]
        self.scores = torch.from_numpy(table.average[kept].astype(np.float32))  # (n,)
        self.variances = torch.from_numpy(table.variance[kept].astype(np.float32))  # (n,)

    def targets(self, index: int) -> dict[str, Any]:
        return {
            "score": float(self.scores[index]),
            "variance": float(self.variances[index]) if self.with_variance else None,
        }


def son_split_rows(n: int, split: str, split_sizes: Sequence[int] = SON_SPLIT_SIZES) -> np.ndarray:
    """Rows (into the ID-ordered table of ``n`` usable rows) of ``split``: consecutive blocks of
    ``split_sizes``, or of their proportions when ``n < sum(split_sizes)``; "all" is every row."""
    check_split(split)
    if split == "all":
        return np.arange(n)
    total = sum(split_sizes) if len(split_sizes) == 3 else -1
    sizes = tuple(split_sizes) if 0 < total <= n else scaled_sizes(n, split_sizes)
    return ordered_split(n, sizes)[SPLITS.index(split)]
