"""A plain CSV folder: the user's own images, attributes and targets, writable with a spreadsheet.

Layout of ``root``::

    attributes.csv   path,split,<attribute 1>,...,<attribute K>   values in [0, 1] (fraction of annotators)
    targets.csv      path,split,<target>[,<target>_variance]...   floats (variance >= 0)
    <images>         anywhere below root, named by ``path`` (relative to root, '/'-separated)

Either file may be absent (not both); an image may appear in one file or both. ``split`` is
optional (``train``, ``val`` or ``test``); the attribute names of attributes.csv define K.
targets.csv holds one or more target columns (T, in header order; each may have its own
``<target>_variance`` column). With several targets a cell may be left empty for a target an image
lacks (its variance cell then empty too); a row needs at least one value. Files are read with
Python's :mod:`csv` module (UTF-8, an optional BOM, blank lines ignored). Every error names the
file, the line and the column (:class:`CsvFormatError`): an empty file, a missing ``path``
column, a duplicate path, a value outside [0, 1], a non-numeric target, a row without any target
value, a variance without its target, an unknown split name, an
image path outside ``root``; missing images follow :func:`siam.data.robust.check_missing_images`
(reported, fatal above ``max_missing_fraction``), with the line of the first missing one.

Splits (:func:`resolve_splits`): a ``split`` cell wins (an image in both files must not get two).
Images without one get a seeded split with the paper's proportions: those in targets.csv the
ScenicOrNot 150,000 / 20,000 / 30,000 (75 / 10 / 15 %), attributes-only images the SUN
11,414 / 1,497 / 1,429, each drawn over the images sorted by path with
:func:`siam.data.splits.seeded_split` (``seed``). With ``splits_file`` (``siam train`` passes
``OUT/splits.csv``) the drawn split is written there (``path,split`` for every image) and reused
when that file exists, so a run can be reproduced; the data folder itself is never written.

    CsvDataset(root, split="train", *, rows="any", transform=None, attributes=None,
               with_variance=False, seed=0, splits_file=None, max_missing_fraction=0.05,
               report_path=None, max_megapixels=100.0)

``rows``: ``"attributes"`` (rows of attributes.csv: the SUN role), ``"targets"`` (rows of
targets.csv: the ScenicOrNot role) or ``"any"``. Item ``i`` is a :class:`~siam.data.samples.Sample`
with ``attributes`` (K,) float32 or None, ``scores`` (one value or None per target; ``score`` is
target 0's) or None, ``variances`` (with ``with_variance``; None for a target without a variance
column) or None, ``id`` = the path as written, ``source="csv"``. Order: attributes.csv
rows in file order, then targets-only rows in targets.csv order.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.data.robust import DEFAULT_MAX_MISSING_FRACTION, ImageDataset, Transform
from siam.data.scenic_or_not import SON_SPLIT_SIZES
from siam.data.splits import SPLITS, check_split, scaled_sizes, seeded_split
from siam.data.sun_attributes import SUN_SPLIT_SIZES, select_columns
from siam.errors import DatasetError

ATTRIBUTES_FILE = "attributes.csv"
TARGETS_FILE = "targets.csv"
SPLITS_FILE = "splits.csv"
CSV_FILES: tuple[str, str] = (ATTRIBUTES_FILE, TARGETS_FILE)
PATH_COLUMN = "path"
SPLIT_COLUMN = "split"
VARIANCE_SUFFIX = "_variance"
HEADER_LINE = 1

Rows = Literal["any", "attributes", "targets"]
ROWS: tuple[str, ...] = ("any", "attributes", "targets")

__all__ = [
    "CsvDataset",
    "CsvFormatError",
    "AttributeTable",
    "TargetTable",
    "read_attributes_csv",
    "read_targets_csv",
    "resolve_splits",
    "is_csv_folder",
    "data_layout",
    "csv_attribute_names",
    "csv_target_names",
    "ATTRIBUTES_FILE",
    "TARGETS_FILE",
    "SPLITS_FILE",
    "CSV_FILES",
]


class CsvFormatError(DatasetError):
    """A CSV cell or row is not allowed: names the file, the line (1 = header) and the column."""

    def __init__(self, file: str | os.PathLike[str], line: int, column: str | None, message: str) -> None:
        self.file = str(file)
        self.line = int(line)
        self.column = column
        where = f"{self.file}, line {self.line}" + (f", column {column!r}" if column is not None else "")
        super().__init__(f"{where}: {message}")


# --- reading one file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (line number, cells)


def _read_rows(path: Path) -> _Rows:
    """Header and non-blank rows of ``path`` with their line numbers; checks the ``path`` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows: list[tuple[int, tuple[str, ...]]] = []
            header: tuple[str, ...] | None = None
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if header is None:
                    header = tuple(c.strip() for c in cells)
                    header_line = reader.line_num
                else:
                    rows.append((reader.line_num, tuple(cells)))
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read it as a UTF-8 CSV file ({exc})") from None
    if header is None:
        raise CsvFormatError(path, HEADER_LINE, None, f"empty file; expected a header starting with "
                             f"'{PATH_COLUMN},' and one row per image")
    seen: dict[str, int] = {}
    for j, name in enumerate(header):
        if not name:
            raise CsvFormatError(path, header_line, f"#{j + 1}", "empty column name in the header")
        if name in seen:
            raise CsvFormatError(path, header_line, name, f"column name repeated (columns {seen[name] + 1} and {j + 1})")
        seen[name] = j
    if PATH_COLUMN not in seen:
        raise CsvFormatError(path, header_line, PATH_COLUMN, f"the header has no {PATH_COLUMN!r} column "
                             f"(found {list(header)}); expected '{PATH_COLUMN},[{SPLIT_COLUMN},]<columns>'")
    for line, cells in rows:
        if len(cells) != len(header):
            raise CsvFormatError(path, line, None, f"{len(cells)} fields, the header has {len(header)}")
    return _Rows(header=header, rows=tuple(rows))


def _rel_path(cell: str, path: Path, line: int) -> str:
    text = cell.strip().replace("\\", "/")
    rel = PurePosixPath(text)
    if not text or rel.is_absolute() or ".." in rel.parts:
        raise CsvFormatError(path, line, PATH_COLUMN, f"{cell!r} is not a relative path inside the folder "
                             f"(no leading '/', no '..')")
    return str(rel)


def _split_cell(cell: str, path: Path, line: int) -> str:
    value = cell.strip()
    if value not in SPLITS:
        raise CsvFormatError(path, line, SPLIT_COLUMN, f"unknown split name {cell!r}; allowed: {', '.join(SPLITS)}")
    return value


def _paths_and_splits(table: _Rows, path: Path) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    pj = table.header.index(PATH_COLUMN)
    sj = table.header.index(SPLIT_COLUMN) if SPLIT_COLUMN in table.header else None
    paths: list[str] = []
    first: dict[str, int] = {}
    for line, cells in table.rows:
        rel = _rel_path(cells[pj], path, line)
        if rel in first:
            raise CsvFormatError(path, line, PATH_COLUMN, f"duplicate path {rel!r} (first on line {first[rel]})")
        first[rel] = line
        paths.append(rel)
    splits = tuple(_split_cell(cells[sj], path, line) if sj is not None else None for line, cells in table.rows)
    return tuple(paths), splits


def _float(cell: str, path: Path, line: int, column: str, what: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CsvFormatError(path, line, column, f"{cell!r} is not {what}")
    return value


@dataclass(frozen=True)
class AttributeTable:
    """attributes.csv: ``paths``/``lines``/``splits`` (N,); ``names`` (K,); ``labels`` (N, K) float32."""

    file: Path
    paths: tuple[str, ...]
    lines: tuple[int, ...]
    splits: tuple[str | None, ...]
    names: tuple[str, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class TargetTable:
    """targets.csv: ``paths``/``lines``/``splits`` (N,); ``names`` (T,) the target columns in header
    order; ``values`` (N, T) float64 (NaN: empty cell); ``variances`` (N, T) float64 (NaN: empty
    cell or no ``<name>_variance`` column); ``has_variance`` (T,) which targets have that column."""

    file: Path
    paths: tuple[str, ...]
    lines: tuple[int, ...]
    splits: tuple[str | None, ...]
    names: tuple[str, ...]
    values: np.ndarray
    variances: np.ndarray
    has_variance: tuple[bool, ...]

    @property
    def name(self) -> str:
        """The first target's name."""
        return self.names[0]


def read_attributes_csv(path: str | os.PathLike[str], *, attributes: Sequence[str] | None = None) -> AttributeTable:
    """Parse attributes.csv (format in the module docstring); ``attributes`` selects and orders
    columns (:func:`siam.data.sun_attributes.select_columns`), None keeps every column."""
    path = Path(path)
    table = _read_rows(path)
    paths, splits = _paths_and_splits(table, path)
    cols = [j for j, h in enumerate(table.header) if h not in (PATH_COLUMN, SPLIT_COLUMN)]
    names = tuple(table.header[j] for j in cols)
    if not names:
        raise CsvFormatError(path, HEADER_LINE, None, f"no attribute columns; expected "
                             f"'{PATH_COLUMN},[{SPLIT_COLUMN},]<attribute 1>,...,<attribute K>'")
    labels = np.zeros((len(paths), len(names)), dtype=np.float32)
    for i, (line, cells) in enumerate(table.rows):
        for k, j in enumerate(cols):
            v = _float(cells[j], path, line, names[k], "a fraction of annotators in [0, 1]")
            if not 0.0 <= v <= 1.0:
                raise CsvFormatError(path, line, names[k], f"{cells[j]!r} is outside [0, 1] "
                                     f"(a fraction of annotators)")
            labels[i, k] = v
    chosen = select_columns(names, attributes, where=str(path))
    return AttributeTable(
        file=path, paths=paths, lines=tuple(line for line, _ in table.rows), splits=splits,
        names=tuple(attributes) if attributes is not None else names,
        labels=np.ascontiguousarray(labels[:, chosen]),
    )


def read_targets_csv(path: str | os.PathLike[str]) -> TargetTable:
    """Parse targets.csv (format in the module docstring): one or more target columns."""
    path = Path(path)
    table = _read_rows(path)
    paths, splits = _paths_and_splits(table, path)
    others = [h for h in table.header if h not in (PATH_COLUMN, SPLIT_COLUMN)]
    names = tuple(h for h in others if not h.endswith(VARIANCE_SUFFIX))
    if not names:
        raise CsvFormatError(path, HEADER_LINE, None, f"no target column; expected "
                             f"'{PATH_COLUMN},[{SPLIT_COLUMN},]<target>[,<target>{VARIANCE_SUFFIX}]...'")
    for h in others:
        if h.endswith(VARIANCE_SUFFIX) and h[: -len(VARIANCE_SUFFIX)] not in names:
            raise CsvFormatError(path, HEADER_LINE, h, f"a variance column without its target; the targets are "
                                 f"{list(names)}, so their variance columns are "
                                 f"{[n + VARIANCE_SUFFIX for n in names]}")
    tj = [table.header.index(n) for n in names]
    vj = [table.header.index(n + VARIANCE_SUFFIX) if n + VARIANCE_SUFFIX in table.header else None for n in names]
    values = np.full((len(paths), len(names)), np.nan, dtype=np.float64)
    variances = np.full((len(paths), len(names)), np.nan, dtype=np.float64)
    several = len(names) > 1
    for i, (line, cells) in enumerate(table.rows):
        for t, name in enumerate(names):
            cell = cells[tj[t]]
            empty = several and not cell.strip()  # one target: an empty cell is an error below
            if not empty:
                values[i, t] = _float(cell, path, line, name, "a number (the target)")
            if vj[t] is None:
                continue
            vname, vcell = name + VARIANCE_SUFFIX, cells[vj[t]]  # type: ignore[index]
            if empty:
                if vcell.strip():
                    raise CsvFormatError(path, line, vname, f"{vcell!r}: a variance without a value of its "
                                         f"target {name!r} (leave both empty, or give the target)")
                continue
            v = _float(vcell, path, line, vname, "a number (the target's variance)")
            if v < 0:
                raise CsvFormatError(path, line, vname, f"{vcell!r} is negative; a variance is >= 0")
            variances[i, t] = v
        if several and np.isnan(values[i]).all():
            raise CsvFormatError(path, line, names[0], f"no target value: every target cell of this row is empty "
                                 f"({list(names)}); a row needs at least one (drop the row otherwise)")
    return TargetTable(file=path, paths=paths, lines=tuple(line for line, _ in table.rows), splits=splits,
                       names=names, values=values, variances=variances,
                       has_variance=tuple(j is not None for j in vj))


def csv_target_names(root: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The target names of ``root/targets.csv`` (header order); None without it."""
    path = Path(root) / TARGETS_FILE
    return read_targets_csv(path).names if path.is_file() else None


# --- the folder ---------------------------------------------------------------------------------


def is_csv_folder(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds attributes.csv or targets.csv."""
    return any((Path(root) / f).is_file() for f in CSV_FILES)


def data_layout(root: str | os.PathLike[str]) -> Literal["csv", "synth"]:
    """``"csv"`` (attributes.csv / targets.csv) or ``"synth"`` (``sun/`` / ``son/``, the ``siam
    synth`` layout) from the folder's contents; :class:`DatasetError` when it is neither or both."""
    p = Path(root)
    if not p.is_dir():
        raise DatasetError(f"data folder {str(p)!r} " + ("is not a directory" if p.exists() else "does not exist"))
    csv_ = is_csv_folder(p)
    synth = (p / "sun").is_dir() or (p / "son").is_dir()
    if csv_ and synth:
        raise DatasetError(f"data folder {str(p)!r} holds both layouts ({' / '.join(CSV_FILES)} and sun/ / son/); "
                           f"keep one per folder")
    if csv_:
        return "csv"
    if synth:
        return "synth"
    raise DatasetError(
        f"data folder {str(p)!r} is neither layout: expected {ATTRIBUTES_FILE} and/or {TARGETS_FILE} "
        f"(the CSV format) or sun/ and son/ subfolders (the 'siam synth' layout); found "
        f"{sorted(x.name for x in p.iterdir())[:10]}"
    )


def csv_attribute_names(root: str | os.PathLike[str], attributes: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The attribute names of ``root/attributes.csv`` (selected by ``attributes``); None without it."""
    path = Path(root) / ATTRIBUTES_FILE
    return read_attributes_csv(path, attributes=attributes).names if path.is_file() else None


def _read_split_file(path: Path) -> dict[str, str]:
    table = _read_rows(path)
    if SPLIT_COLUMN not in table.header:
        raise CsvFormatError(path, HEADER_LINE, SPLIT_COLUMN, f"the header has no {SPLIT_COLUMN!r} column")
    paths, splits = _paths_and_splits(table, path)
    return {p: s for p, s in zip(paths, splits) if s is not None}


def _write_split_file(path: Path, splits: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([PATH_COLUMN, SPLIT_COLUMN])
        for p in sorted(splits):
            w.writerow([p, splits[p]])
    os.replace(tmp, path)


def resolve_splits(
    attrs: AttributeTable | None,
    targets: TargetTable | None,
    *,
    seed: int = 0,
    splits_file: str | os.PathLike[str] | None = None,
) -> dict[str, str]:
    """``path -> split`` for every image of both files (rules in the module docstring)."""
    given: dict[str, tuple[str, Path, int]] = {}
    for table in (attrs, targets):
        if table is None:
            continue
        for p, s, line in zip(table.paths, table.splits, table.lines):
            if s is None:
                continue
            if p in given and given[p][0] != s:
                s0, f0, l0 = given[p]
                raise CsvFormatError(table.file, line, SPLIT_COLUMN, f"{p!r} is {s!r} here but {s0!r} in {f0}, line {l0}")
            given.setdefault(p, (s, table.file, line))
    out = {p: v[0] for p, v in given.items()}
    scored = sorted(p for p in (targets.paths if targets else ()) if p not in out)
    scored_set = set(scored)
    attr_only = sorted(p for p in (attrs.paths if attrs else ()) if p not in out and p not in scored_set)
    if not scored and not attr_only:
        return out
    file = Path(splits_file) if splits_file is not None else None
    if file is not None and file.is_file():
        stored = _read_split_file(file)
        lacking = [p for p in scored + attr_only if p not in stored]
        if lacking:
            raise DatasetError(
                f"{file}: {len(lacking)} images have no split there (first: {lacking[:3]}); the data changed "
                f"since this split was drawn. Delete {file} to draw a new one, or give a '{SPLIT_COLUMN}' column"
            )
        out.update({p: stored[p] for p in scored + attr_only})
        return out
    for paths, sizes in ((scored, SON_SPLIT_SIZES), (attr_only, SUN_SPLIT_SIZES)):
        if not paths:
            continue
        parts = seeded_split(len(paths), scaled_sizes(len(paths), sizes), seed=seed)
        for name, idx in zip(SPLITS, parts):
            out.update({paths[i]: name for i in idx})
    if file is not None:
        _write_split_file(file, out)
    return out


class CsvDataset(ImageDataset):
    """Images of a CSV folder with their attributes and/or target; signature in the module docstring.

    Attributes: ``attributes`` (names, K; () without attributes.csv), ``target_names`` (T; ()
    without targets.csv), ``target`` (the first target's name or None), ``labels`` (n, K) float32
    (NaN rows: no attributes), ``all_scores`` / ``all_variances`` (n, T) float32 (NaN: no value),
    ``scores`` / ``variances`` (n,) their target-0 columns, ``lines`` (the CSV line of each item),
    ``missing``.
    """

    source = "csv"

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        rows: Rows = "any",
        transform: Transform | None = None,
        attributes: Sequence[str] | None = None,
        with_variance: bool = False,
        seed: int = 0,
        splits_file: str | os.PathLike[str] | None = None,
        max_missing_fraction: float = DEFAULT_MAX_MISSING_FRACTION,
        report_path: str | os.PathLike[str] | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        self.root = Path(root)
        check_split(split)
        if rows not in ROWS:
            raise DatasetError(f"rows must be one of {ROWS}, got {rows!r}")
        super().__init__(transform=transform, max_megapixels=max_megapixels, name=f"csv:{rows}:{split}")
        if not self.root.is_dir():
            raise DatasetError(f"CSV data folder {str(self.root)!r} is not a directory")
        if not is_csv_folder(self.root):
            raise DatasetError(f"{self.root}: neither {ATTRIBUTES_FILE} nor {TARGETS_FILE} found")
        apath, tpath = self.root / ATTRIBUTES_FILE, self.root / TARGETS_FILE
        attrs = read_attributes_csv(apath, attributes=attributes) if apath.is_file() else None
        targets = read_targets_csv(tpath) if tpath.is_file() else None
        need = {"attributes": (attrs, apath), "targets": (targets, tpath)}.get(rows)
        if need is not None and need[0] is None:
            role = "attribute labels (the SUN role)" if rows == "attributes" else "targets (the ScenicOrNot role)"
            raise DatasetError(f"{self.root}: {need[1].name} not found; the {role} are read from it")
        if with_variance and targets is not None and not any(targets.has_variance):
            raise CsvFormatError(tpath, HEADER_LINE, targets.name + VARIANCE_SUFFIX,
                                 "the variance was asked for (model.predict_variance) but the column is absent "
                                 f"(no target of {list(targets.names)} has a {VARIANCE_SUFFIX} column)")
        self.with_variance = bool(with_variance)
        splits = resolve_splits(attrs, targets, seed=seed, splits_file=splits_file)
        self.attributes: tuple[str, ...] = attrs.names if attrs is not None else ()
        self.target_names: tuple[str, ...] = targets.names if targets is not None else ()
        self.target: str | None = targets.name if targets is not None else None
        a_row = {p: i for i, p in enumerate(attrs.paths)} if attrs is not None else {}
        t_row = {p: i for i, p in enumerate(targets.paths)} if targets is not None else {}
        order: list[str] = []
        if rows in ("any", "attributes"):
            order += list(a_row)
        if rows in ("any", "targets"):
            order += [p for p in t_row if rows == "targets" or p not in a_row]
        chosen = [p for p in order if split == "all" or splits[p] == split]
        where = {p: (attrs.file, attrs.lines[a_row[p]]) if p in a_row else (targets.file, targets.lines[t_row[p]])  # type: ignore[union-attr]
                 for p in chosen}
        try:
            keep = self._set_images(chosen, [self.root / p for p in chosen], max_missing_fraction=max_missing_fraction,
                                    report_path=report_path)
        except DatasetError as exc:
            first = next((p for p in chosen if not (self.root / p).is_file()), None)
            if first is None:
                raise
            file, line = where[first]
            raise CsvFormatError(file, line, PATH_COLUMN, f"image {first!r} not found in {self.root}; {exc}") from None
        kept = [p for p, k in zip(chosen, keep) if k]
        k = len(self.attributes)
        labels = np.full((len(kept), k), np.nan, dtype=np.float32)
        t = max(1, len(self.target_names))
        scores = np.full((len(kept), t), np.nan, dtype=np.float32)
        variances = np.full((len(kept), t), np.nan, dtype=np.float32)
        for i, p in enumerate(kept):
            if p in a_row:
                labels[i] = attrs.labels[a_row[p]]  # type: ignore[union-attr]
            if p in t_row:
                scores[i] = targets.values[t_row[p]]  # type: ignore[union-attr]
                variances[i] = targets.variances[t_row[p]]  # type: ignore[union-attr]
        self.lines = [where[p][1] for p in kept]
        self.labels = torch.from_numpy(labels)  # (n, K)
        self.all_scores = torch.from_numpy(scores)  # (n, T)
        self.all_variances = torch.from_numpy(variances)  # (n, T)
        self.scores = self.all_scores[:, 0]  # (n,)
        self.variances = self.all_variances[:, 0]  # (n,)
        self._has_attr = [p in a_row for p in kept]
        self._has_score = [p in t_row for p in kept]

    def targets(self, index: int) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": self.labels[index] if self._has_attr[index] else None, "scores": None,
                               "variances": None}
        if self._has_score[index]:
            out["scores"] = _present(self.all_scores[index])
            if self.with_variance:
                out["variances"] = _present(self.all_variances[index])
        return out


def _present(row: torch.Tensor) -> tuple[float | None, ...]:
    """(T,) with NaN for absent values -> one float or None per target."""
    return tuple(None if math.isnan(v) else v for v in row.tolist())
