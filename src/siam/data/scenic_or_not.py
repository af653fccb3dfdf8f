"""ScenicOrNot (mySociety; Geograph photos of Great Britain rated 1-10) in its published formats.

Layout of ``root``::

    votes.tsv            one row per photo, tab-separated, with a header
    images/**/<KEY>.jpg  the photos, flat or in any subfolders (indexed once by a recursive scan)

``votes.tsv`` comes in two formats, told apart by the header (names compared after
:func:`siam.vocab.normalize_name`, so case and spaces do not matter). Each has its own image key:

* historical: ``ID, Lat, Lon, Average, Variance, Votes, Geograph URI``. The key is the ``ID``
  column, as in the authors' code (images ``<ID>.jpg``, splits in ID order). The ID is *not* the
  Geograph photo number: the first row is ID 1, ``.../photo/7``.
* current export: the same without ``ID``; the key is the Geograph photo number at the end of the
  URI (``http://www.geograph.org.uk/photo/123456`` -> images ``123456.jpg``). Its splits follow
  photo-number order, so they are not the paper's splits.

``siam data download scenicornot`` names the photos by the key of the votes.tsv it fetched. A
folder named by the other key is refused with a :class:`~siam.errors.DatasetError` instead of
pairing photos with the wrong scores: in the historical format when more file names are photo
numbers of the usable rows than IDs of them (a folder named by those IDs has at most as many), and in
either format when
``root/download_manifest.jsonl`` records that a file ``images/<KEY>.jpg`` came from another photo
page than the row with that key names.

``Votes`` holds the individual ratings (``"7,8,6"``), as in the real file, or, in a file where no
row has a comma in that column, the number of votes. Rows with at least ``min_votes`` votes are
kept and ordered by key; the first ``sum(split_sizes)`` of them are cut into consecutive blocks
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
``variance`` = Variance if ``with_variance`` else None, ``id`` = the key (as str), ``source="son"``.
"""

from __future__ import annotations

import csv
import io
import json
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
IMAGE_KEYS: dict[str, str] = {"historical": "ID", "current": "Geograph photo number"}
DOWNLOAD_MANIFEST = "download_manifest.jsonl"  # written by siam.data.download

__all__ = [
    "ScenicOrNot",
    "VotesTable",
    "read_votes",
    "index_images",
    "check_image_key",
    "son_split_rows",
    "SON_SPLIT_SIZES",
    "HISTORICAL_COLUMNS",
    "CURRENT_COLUMNS",
    "IMAGE_KEYS",
]

_URI_ID = re.compile(r"/photo/(\d+)")
_TRAILING_ID = re.compile(r"(\d+)\D*$")


@dataclass(frozen=True)
class VotesTable:
    """Usable rows of a votes.tsv, ascending by key; arrays are (N,).

    ``format``: ``"historical"`` or ``"current"``; ``ids``: the image key (:data:`IMAGE_KEYS`: the
    ID column, or the photo number in the current export); ``photos``: the Geograph photo number
    from the URI (-1 where the URI has none; equal to ``ids`` in the current export); ``votes``:
    number of votes per photo; ``lat``/``lon``: NaN where the file has no such column;
    ``dropped``: rows under ``min_votes``.
    """

    format: str
    ids: np.ndarray
    photos: np.ndarray
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


def _uri_photo(uri: str) -> int | None:
    m = _URI_ID.search(uri) or _TRAILING_ID.search(uri.strip())
    return int(m.group(1)) if m is not None else None


def _uri_id(uri: str, line: int, path: Path) -> int:
    photo = _uri_photo(uri)
    if photo is None:
        raise DatasetError(
            f"{path}, line {line}: cannot read a photo ID from the Geograph URI {uri!r}; "
            f"expected e.g. http://www.geograph.org.uk/photo/123456"
        )
    return photo


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
    out: dict[str, list[Any]] = {k: [] for k in _ROW_FIELDS}
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
            photo = _uri_photo(r[col["Geograph URI"]])
        else:
            pid = photo = _uri_id(r[col["Geograph URI"]], n, path)
        if pid in seen:
            raise DatasetError(f"{path}: photo ID {pid} appears on lines {seen[pid]} and {n}")
        seen[pid] = n
        if count < min_votes:
            dropped += 1
            continue
        out["ids"].append(pid)
        out["photos"].append(-1 if photo is None else photo)
        out["votes"].append(count)
        out["average"].append(_number(r[col["Average"]], "Average", n, path))
        out["variance"].append(_number(r[col["Variance"]], "Variance", n, path))
        for c in ("Lat", "Lon"):
            j = col.get(c)
            out[c.lower()].append(_number(r[j], c, n, path) if j is not None and r[j].strip() else np.nan)
    order = np.argsort(np.asarray(out["ids"], dtype=np.int64), kind="stable")
    dtypes = {"ids": np.int64, "photos": np.int64, "votes": np.int64}
    return VotesTable(
        format=fmt,
        **{k: np.asarray(out[k], dtype=dtypes.get(k, np.float64))[order] for k in _ROW_FIELDS},
        dropped=dropped,
    )


_ROW_FIELDS: tuple[str, ...] = ("ids", "photos", "average", "variance", "votes", "lat", "lon")


def _manifest_pages(root: Path) -> dict[str, int]:
    """``stem -> photo number of the page it came from`` for ``images/*.jpg`` in a download manifest."""
    path = root / DOWNLOAD_MANIFEST
    pages: dict[str, int] = {}
    if not path.is_file():
        return pages
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"page"' not in line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        rel, page = entry.get("path"), entry.get("page")
        if isinstance(rel, str) and isinstance(page, str) and rel.startswith("images/"):
            photo = _uri_photo(page)
            if photo is not None:
                pages[Path(rel).stem] = photo
    return pages


def check_image_key(
    table: VotesTable, image_index: Mapping[str, Path], *, where: str | os.PathLike[str],
    manifest_root: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse an image folder named by the other key than ``table.format`` expects (:data:`IMAGE_KEYS`).

    Raises :class:`DatasetError` when (historical format) more file stems are photo numbers than
    IDs of the table's rows, or when the download manifest in ``manifest_root`` records that
    ``images/<key>.jpg`` came from another photo than the row with that key (either format; the
    stems alone cannot tell the current export's photo numbers from historical IDs, which it
    lacks). ``where`` names the folder in the message.
    """
    key = IMAGE_KEYS[table.format]
    stems = set(image_index)
    by_key = dict(zip((str(i) for i in table.ids), (int(p) for p in table.photos)))
    if table.format == "historical":
        n_key = sum(1 for i in by_key if i in stems)
        n_photo = sum(1 for p in by_key.values() if p >= 0 and str(p) in stems)
        if n_photo > n_key:
            i, p = next((i, p) for i, p in by_key.items() if i != str(p) and p >= 0)
            raise DatasetError(
                f"{where}: the image files are named by Geograph photo number ({n_photo} of the "
                f"votes file's photo numbers have a file, only {n_key} of its IDs), but this "
                f"votes.tsv is the historical format, whose images are named <ID>.jpg (e.g. ID {i} is "
                f"photo {p}, file {i}.jpg). Use the current export with this folder, or name the "
                f"files by ID (siam data download scenicornot with this votes.tsv does)"
            )
    if manifest_root is None:
        return
    pages = _manifest_pages(Path(manifest_root))
    wrong = [(k, pages[k], p) for k, p in by_key.items()
             if k in stems and k in pages and p >= 0 and pages[k] != p]
    if wrong:
        k, got, want = wrong[0]
        raise DatasetError(
            f"{where}: {len(wrong)} image files are named for another votes.tsv format: "
            f"{Path(manifest_root) / DOWNLOAD_MANIFEST} records that {k}.jpg is Geograph photo {got}, "
            f"but in this votes.tsv ({table.format} format, images named <{key}>.jpg) {k} is photo "
            f"{want}. Rerun siam data download scenicornot --root {manifest_root} to fetch the photos "
            f"under the names this votes.tsv expects"
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
        folder = Path(image_dir) if image_dir is not None else self.root / "images"
        if image_index is None:
            image_index = index_images(folder)
        check_image_key(table, image_index, where=folder,
                        manifest_root=self.root if image_dir is None else None)
        ids = [str(i) for i in table.ids[rows]]
        try:
            keep = self._set_images(
                ids,
                [image_index.get(i) for i in ids],
                max_missing_fraction=max_missing_fraction,
                report_path=report_path or self.root / f"missing_images_{split}.json",
            )
        except DatasetError as exc:
            raise DatasetError(
                f"{exc} (this votes.tsv is the {table.format} format: images are looked up in {folder} "
                f"as <{IMAGE_KEYS[table.format]}>.jpg)"
            ) from None
        self.table = VotesTable(
            format=table.format,
            **{k: getattr(table, k)[rows] for k in _ROW_FIELDS},
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
    """Rows (into the key-ordered table of ``n`` usable rows) of ``split``: consecutive blocks of
    ``split_sizes``, or of their proportions when ``n < sum(split_sizes)``; "all" is every row."""
    check_split(split)
    if split == "all":
        return np.arange(n)
    total = sum(split_sizes) if len(split_sizes) == 3 else -1
    sizes = tuple(split_sizes) if 0 < total <= n else scaled_sizes(n, split_sizes)
    return ordered_split(n, sizes)[SPLITS.index(split)]
