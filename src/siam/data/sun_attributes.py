"""The SUN Attribute Database (Patterson & Hays, IJCV 2014) in its published on-disk format.

Layout of ``root``::

    images.mat                       key ``images``: cell array of N relative names (N = 14,340)
    attributes.mat                   key ``attributes``: cell array of K names
    attributeLabels_continuous.mat   key ``labels_cv``: N x K floats, fraction of 3 annotators
    trainval_idx.mat                 optional, key ``sets``: N values, 0 = train, 1 = val, 2 = test
    images/<name>                    the JPEGs

Both the full database (K = 102) and the SIAM authors' 33-column files (``../shared/data/sun33``;
also accepted under the authors' names ``attributes2.mat`` / ``attributeLabels_continuous2.mat``)
are read. :func:`read_sun_labels` needs only the two label files (no images.mat, no images).

Attribute selection (:func:`select_columns`): ``attributes=None`` keeps every column in file order;
otherwise the named columns, in the order asked. A requested name matches a file column when both
are equal after :func:`siam.vocab.normalize_name` (case, spaces, ``-`` and ``/`` ignored:
``"rock/stone"`` matches ``rock_stone``); failing that, when it equals the column name with any
parenthesised remark removed (``"wood (not part of a tree)"`` matches ``wood``). Names that match
nothing or more than one column raise :class:`~siam.errors.DatasetError` with close matches.
Attributes the authors merged (their ``ice_snow`` from the database's ``ice`` and ``snow``) are not
synthesised from the 102-column file.

Splits: ``splits="auto"`` reads ``trainval_idx.mat`` when present, else draws the paper's
11,414 / 1,497 / 1,429 split from ``seed`` (:func:`siam.data.splits.seeded_split`), scaled to the
same proportions when N is not 14,340. ``"file"`` requires the split file; ``"seed"`` ignores it.
``split="all"`` is every row.

    SunAttributes(root, split="train", *, transform=None, attributes=None, splits="auto",
                  split_file=None, seed=0, split_sizes=SUN_SPLIT_SIZES,
                  max_missing_fraction=0.05, report_path=None, max_megapixels=100.0)

Item ``i`` is a :class:`~siam.data.samples.Sample` with ``image`` (3, H, W), ``attributes`` (K,)
float32 in [0, 1], ``id`` = the row index in the label file (as str), ``source="sun"``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import scipy.io
import torch

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.data.robust import DEFAULT_MAX_MISSING_FRACTION, ImageDataset, Transform
from siam.data.splits import SPLITS, check_split, scaled_sizes, seeded_split
from siam.errors import DatasetError
from siam.vocab import normalize_name, validate_attributes

SUN_NUM_IMAGES: int = 14_340
SUN_SPLIT_SIZES: tuple[int, int, int] = (11_414, 1_497, 1_429)
NAMES_FILES: tuple[str, ...] = ("attributes.mat", "attributes2.mat")
LABELS_FILES: tuple[str, ...] = ("attributeLabels_continuous.mat", "attributeLabels_continuous2.mat")
IMAGES_FILE = "images.mat"
SPLIT_FILE = "trainval_idx.mat"

__all__ = [
    "SunAttributes",
    "SunLabels",
    "read_sun_labels",
    "read_sun_attribute_names",
    "read_sun_image_names",
    "read_sun_split_file",
    "sun_split_rows",
    "select_columns",
    "SUN_NUM_IMAGES",
    "SUN_SPLIT_SIZES",
]


# --- MATLAB helpers -----------------------------------------------------------------------------

def _loadmat(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise DatasetError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with save(..., '-v7')"
        ) from None
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... on garbage
        raise DatasetError(f"{path}: not a readable MATLAB v5 .mat file ({exc})") from None


def _variable(mat: dict[str, Any], key: str, path: Path) -> Any:
    if key in mat:
        return mat[key]
    names = [k for k in mat if not k.startswith("__")]
    if len(names) == 1:
        return mat[names[0]]
    raise DatasetError(f"{path}: expected the variable {key!r}, found {names}")


def _mat_strings(value: Any, path: Path, key: str) -> list[str]:
    """A MATLAB cell array of strings or a char matrix -> list of str (MATLAB linear order)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "U":
        return [str(s).rstrip() for s in arr.ravel(order="F")] if arr.ndim else [str(arr).rstrip()]
    if arr.dtype != object:
        raise DatasetError(
            f"{path}: {key!r} must be a cell array of strings or a char matrix, got a "
            f"{arr.dtype} array of shape {arr.shape}"
        )
    out = []
    for cell in arr.ravel(order="F"):
        strings = _mat_strings(cell, path, key) if np.asarray(cell).size else [""]
        if len(strings) != 1:
            raise DatasetError(f"{path}: {key!r} has a cell holding {len(strings)} strings, expected 1")
        out.append(strings[0])
    return out


def _find(root: Path, names: Sequence[str]) -> Path:
    for n in names:
        if (root / n).is_file():
            return root / n
    raise DatasetError(f"{root}: none of {list(names)} found")


# --- names and labels ---------------------------------------------------------------------------

def _strip_remarks(name: str) -> str:
    return normalize_name(re.sub(r"\([^)]*\)", " ", name))


def select_columns(available: Sequence[str], wanted: Sequence[str] | None, *, where: str) -> list[int]:
    """Column index in ``available`` of each name in ``wanted`` (None: all columns, in order).

    Matching rules are in the module docstring. ``where`` names the file in error messages.
    """
    if wanted is None:
        return list(range(len(available)))
    wanted = validate_attributes(wanted)
    exact: dict[str, list[int]] = {}
    loose: dict[str, list[int]] = {}
    for j, name in enumerate(available):
        exact.setdefault(normalize_name(name), []).append(j)
        loose.setdefault(_strip_remarks(name), []).append(j)
    cols: list[int] = []
    problems: list[str] = []
    for name in wanted:
        key = normalize_name(name)
        hits = exact.get(key) or loose.get(key) or []
        if len(hits) == 1:
            cols.append(hits[0])
            continue
        if hits:
            problems.append(f"{name!r} matches several columns {[available[j] for j in hits]}")
        else:
            close = difflib.get_close_matches(key, list(exact), n=3, cutoff=0.6)
            hint = f" (close: {close})" if close else ""
            problems.append(f"{name!r} matches no column{hint}")
    if problems:
        raise DatasetError(
            f"{where}: cannot select attributes: {'; '.join(problems)}. Available: {list(available)}"
        )
    dups = sorted({available[j] for j in cols if cols.count(j) > 1})
    if dups:
        raise DatasetError(f"{where}: several requested names select the same column(s) {dups}")
    return cols


@dataclass(frozen=True)
class SunLabels:
    """``names``: K attribute names (as requested, or as in the file); ``labels``: (N, K) float32."""

    names: tuple[str, ...]
    labels: np.ndarray


def read_sun_attribute_names(root: str | os.PathLike[str]) -> tuple[str, ...]:
    """All attribute names in ``root``'s attributes.mat, in column order."""
    path = _find(Path(root), NAMES_FILES)
    return tuple(_mat_strings(_variable(_loadmat(path), "attributes", path), path, "attributes"))


def read_sun_labels(
    root: str | os.PathLike[str], *, attributes: Sequence[str] | None = None
) -> SunLabels:
    """Read attributes.mat + attributeLabels_continuous.mat (no images needed).

    Returns :class:`SunLabels` with ``labels`` (N, K) float32 in [0, 1]: the fraction of annotators
    who saw each attribute. ``attributes`` selects columns (see :func:`select_columns`).
    """
    root = Path(root)
    names = read_sun_attribute_names(root)
    lpath = _find(root, LABELS_FILES)
    raw = np.asarray(_variable(_loadmat(lpath), "labels_cv", lpath))
    if raw.ndim != 2 or raw.dtype.kind not in "fiub":
        raise DatasetError(
            f"{lpath}: 'labels_cv' must be a numeric N x K matrix, got {raw.dtype} of shape {raw.shape}"
        )
    k = len(names)
    if raw.shape[1] != k:
        if raw.shape[0] == k:
            raw = raw.T
        else:
            raise DatasetError(
                f"{lpath}: 'labels_cv' has shape {raw.shape}, but attributes.mat names {k} attributes"
            )
    labels = raw.astype(np.float32)
    bad = ~np.isfinite(labels) | (labels < 0) | (labels > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(
            f"{lpath}: {int(bad.sum())} label values are outside [0, 1] (fractions of annotators), "
            f"first at row {r}, column {names[c]!r}: {raw[r, c]!r}"
        )
    cols = select_columns(names, attributes, where=str(root / NAMES_FILES[0]))
    chosen = tuple(attributes) if attributes is not None else names
    return SunLabels(names=chosen, labels=np.ascontiguousarray(labels[:, cols]))


def read_sun_image_names(root: str | os.PathLike[str]) -> list[str]:
    """The N relative image names of ``root/images.mat`` (key ``images``), '/'-separated."""
    path = Path(root) / IMAGES_FILE
    names = _mat_strings(_variable(_loadmat(path), "images", path), path, "images")
    out = []
    for i, name in enumerate(names):
        rel = PurePosixPath(name.replace("\\", "/"))
        if not name or rel.is_absolute() or ".." in rel.parts:
            raise DatasetError(
                f"{path}: entry {i} is {name!r}; expected a relative path inside images/"
            )
        out.append(str(rel))
    return out


def read_sun_split_file(path: str | os.PathLike[str], n: int) -> np.ndarray:
    """``sets`` of a trainval_idx.mat: (n,) int8 with 0 = train, 1 = val, 2 = test."""
    path = Path(path)
    raw = np.asarray(_variable(_loadmat(path), "sets", path))
    if raw.dtype.kind not in "fiub" or raw.size != n:
        raise DatasetError(
            f"{path}: 'sets' must hold {n} numbers (one per label row), got {raw.dtype} of shape {raw.shape}"
        )
    sets = raw.ravel(order="F")
    values = set(np.unique(sets).tolist())
    if not values <= {0, 1, 2}:
        raise DatasetError(
            f"{path}: 'sets' values must be 0 (train), 1 (val) or 2 (test), got {sorted(values)}"
        )
    return sets.astype(np.int8)


def sun_split_rows(
    n: int,
    split: str,
    *,
    splits: Literal["auto", "file", "seed"] = "auto",
    split_file: str | os.PathLike[str] | None = None,
    seed: int = 0,
    split_sizes: Sequence[int] = SUN_SPLIT_SIZES,
) -> np.ndarray:
    """Sorted label-row indices of ``split`` among ``n`` rows (rules in the module docstring)."""
    check_split(split)
    if split == "all":
        return np.arange(n)
    if splits not in ("auto", "file", "seed"):
        raise DatasetError(f"unknown splits mode {splits!r}; allowed: auto, file, seed")
    has_file = split_file is not None and Path(split_file).is_file()
    if splits == "file" or (splits == "auto" and has_file):
        if split_file is None:
            raise DatasetError("splits='file' needs a split_file (trainval_idx.mat)")
        sets = read_sun_split_file(split_file, n)
        return np.flatnonzero(sets == SPLITS.index(split))
    parts = seeded_split(n, scaled_sizes(n, split_sizes), seed=seed)
    return parts[SPLITS.index(split)]


class SunAttributes(ImageDataset):
    """SUN Attributes images with their (K,) attribute labels; signature in the module docstring.

    Attributes: ``attributes`` (names, K), ``rows`` (int64 label-row indices of this split),
    ``labels`` (n, K) float32 tensor, ``missing`` (ids of rows whose image file is absent).
    """

    source = "sun"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        transform: Transform | None = None,
        attributes: Sequence[str] | None = None,
        splits: Literal["auto", "file", "seed"] = "auto",
        split_file: str | os.PathLike[str] | None = None,
        seed: int = 0,
        split_sizes: Sequence[int] = SUN_SPLIT_SIZES,
        max_missing_fraction: float = DEFAULT_MAX_MISSING_FRACTION,
        report_path: str | os.PathLike[str] | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.root = Path(root)
        check_split(split)
        super().__init__(transform=transform, max_megapixels=max_megapixels, name=f"sun_attributes:{split}")
        if not self.root.is_dir():
            raise DatasetError(f"SUN Attributes root {self.root} is not a directory")
        table = read_sun_labels(self.root, attributes=attributes)
        names = read_sun_image_names(self.root)
        n = table.labels.shape[0]
        if len(names) != n:
            raise DatasetError(
                f"{self.root}: images.mat lists {len(names)} images but the label file has {n} rows"
            )
        rows = sun_split_rows(
            n,
            split,
            splits=splits,
            split_file=split_file if split_file is not None else self.root / SPLIT_FILE,
            seed=seed,
            split_sizes=split_sizes,
        )
        image_dir = self.root / "images"
        keep = self._set_images(
            [str(r) for r in rows],
            [image_dir / names[r] for r in rows],
            max_missing_fraction=max_missing_fraction,
            report_path=report_path or self.root / f"missing_images_{split}.json",
        )
        self.attributes: tuple[str, ...] = table.names
        self.rows = rows[keep].astype(np.int64)
        self.labels = torch.from_numpy(table.labels[self.rows])  # (n, K) float32

    def targets(self, index: int) -> dict[str, Any]:
        return {"attributes": self.labels[index]}
