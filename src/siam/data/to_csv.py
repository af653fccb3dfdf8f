"""``siam data to-csv``: convert a folder in the ``siam synth`` layout to the plain CSV format.

    siam data to-csv --data runs/data --out runs/csvdata [--copy] [--target scenicness]
                     [--derived-target reversed]

Reads ``DATA/sun`` (SUN Attributes files) and ``DATA/son`` (ScenicOrNot votes.tsv) with the same
readers and defaults as ``siam train`` (SUN split from ``trainval_idx.mat`` or seed 0; ScenicOrNot
rows with >= 3 votes, ordered blocks) and writes (format: :mod:`siam.data.csv_folder`)::

    OUT/attributes.csv   path,split,<the SUN attribute names>   one row per SUN image
    OUT/targets.csv      path,split,<target>,<target>_variance  one row per ScenicOrNot image
    OUT/images/sun/...   the SUN images (images.mat names)      OUT/images/son/<ID>.jpg

Images are hard-linked (nothing is copied on the same file system) or, with ``--copy`` or across
file systems, copied. Rows whose image is missing in DATA are left out (counted in the summary).
Values are written with ``repr`` so they read back bit-identical. ``--derived-target reversed``
adds a second target column ``<target>_reversed`` = 11 - score (the 1..10 rating read the other
way round, without a variance column): ``siam train`` then trains both targets, g with one set of
templates, w and b per target over the same attribute maps, and ``siam evaluate`` reports each.
``son_attributes.csv`` is not converted. The planted truth, when DATA has ``truth/meta.json``, is
carried: every file of ``DATA/truth`` is linked (or copied) into ``OUT/truth``, and
``OUT/truth/csv_ids.csv`` (``path,dataset,key``) maps each written CSV path to its masks
(``sun``, the images.mat row, or ``son``, the ScenicOrNot ID: ``truth/masks/<dataset>/<key>.npz``),
so ``siam evaluate``, ``siam quickstart`` and ``siam truth`` report the planted-truth metrics on
the CSV copy (:func:`siam.evaluation.planted.load_csv_truth`).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from siam.data.csv_folder import ATTRIBUTES_FILE, PATH_COLUMN, SPLIT_COLUMN, TARGETS_FILE, VARIANCE_SUFFIX
from siam.data.scenic_or_not import index_images, read_votes, son_split_rows
from siam.data.splits import SPLITS
from siam.data.sun_attributes import SPLIT_FILE, read_sun_image_names, read_sun_labels, sun_split_rows
from siam.errors import ConfigError, DatasetError

#: The ScenicOrNot rating scale; ``reversed`` maps a rating y to RATING_MIN + RATING_MAX - y.
RATING_MIN, RATING_MAX = 1.0, 10.0
DERIVED_TARGETS: tuple[str, ...] = ("reversed",)
DEFAULT_TARGET = "scenicness"
#: ``OUT/truth/csv_ids.csv``: CSV path -> the planted masks' dataset (``sun``/``son``) and key.
IDS_FILE = "csv_ids.csv"
IDS_HEADER: tuple[str, str, str] = ("path", "dataset", "key")

__all__ = ["ConvertResult", "convert_to_csv", "add_arguments", "run", "DERIVED_TARGETS", "IDS_FILE", "IDS_HEADER"]


@dataclass(frozen=True)
class ConvertResult:
    """Rows written per file, rows left out for a missing image, and whether images were linked."""

    out: Path
    n_attributes: int
    n_targets: int
    skipped: int
    linked: int
    copied: int
    truth: bool = False

    def summary(self) -> str:
        carried = (f"; planted truth carried into {self.out / 'truth'} (paths mapped in {IDS_FILE})" if self.truth
                   else "; no planted truth (DATA has no truth/meta.json)")
        return (f"wrote {self.out / ATTRIBUTES_FILE} ({self.n_attributes} rows) and {self.out / TARGETS_FILE} "
                f"({self.n_targets} rows); images: {self.linked} hard-linked, {self.copied} copied; "
                f"{self.skipped} rows left out (image missing)" + carried)


class _Placer:
    def __init__(self, copy: bool) -> None:
        self.copy, self.linked, self.copied = copy, 0, 0

    def __call__(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        if not self.copy:
            try:
                os.link(src, dst)
                self.linked += 1
                return
            except OSError:
                pass  # another file system, or links not allowed: copy
        shutil.copyfile(src, dst)
        self.copied += 1


def _split_of(n: int, rows_of: dict[str, object]) -> list[str]:
    out = [""] * n
    for name, rows in rows_of.items():
        for r in rows:  # type: ignore[attr-defined]
            out[int(r)] = name
    return out


def convert_to_csv(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    copy: bool = False,
    target: str = DEFAULT_TARGET,
    derived_target: str | None = None,
) -> ConvertResult:
    """Write the CSV copy of ``data`` (a ``siam synth`` folder) into ``out``; see the module docstring."""
    src, dst = Path(data), Path(out)
    sun, son = src / "sun", src / "son"
    if not sun.is_dir() or not son.is_dir():
        raise DatasetError(f"--data {str(src)!r} is not in the 'siam synth' layout (needs sun/ and son/)")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise ConfigError(f"--out {str(dst)!r} must lie outside --data {str(src)!r} (the data are not modified)")
    if derived_target is not None and derived_target not in DERIVED_TARGETS:
        raise ConfigError(f"--derived-target: got {derived_target!r}; allowed: {list(DERIVED_TARGETS)}")
    if not target or target in (PATH_COLUMN, SPLIT_COLUMN) or target.endswith(VARIANCE_SUFFIX):
        raise ConfigError(f"--target: got {target!r}; a column name other than {PATH_COLUMN!r}, {SPLIT_COLUMN!r} "
                          f"not ending in {VARIANCE_SUFFIX!r}")
    dst.mkdir(parents=True, exist_ok=True)
    place = _Placer(copy)
    skipped = 0
    ids: list[list[str]] = []  # path, dataset, key: where each written image's planted masks are

    labels = read_sun_labels(sun)
    names = read_sun_image_names(sun)
    n = labels.labels.shape[0]
    split = _split_of(n, {s: sun_split_rows(n, s, split_file=sun / SPLIT_FILE) for s in SPLITS})
    rows_a = []
    for r, name in enumerate(names):
        image = sun / "images" / name
        if not split[r]:
            continue
        if not image.is_file():
            skipped += 1
            continue
        rel = f"images/sun/{name}"
        place(image, dst / rel)
        rows_a.append([rel, split[r], *(repr(float(v)) for v in labels.labels[r])])
        ids.append([rel, "sun", str(r)])

    votes = read_votes(son / "votes.tsv")
    split = _split_of(len(votes), {s: son_split_rows(len(votes), s) for s in SPLITS})
    index = index_images(son / "images")
    rows_t = []
    for i, pid in enumerate(votes.ids):
        image = index.get(str(pid))
        if not split[i]:
            continue  # beyond the paper's 200,000 rows: in no split
        if image is None:
            skipped += 1
            continue
        rel = f"images/son/{pid}{image.suffix}"
        place(image, dst / rel)
        ids.append([rel, "son", str(pid)])
        y = float(votes.average[i])
        row = [rel, split[i], repr(y), repr(float(votes.variance[i]))]
        if derived_target == "reversed":
            row.append(repr(RATING_MIN + RATING_MAX - y))
        rows_t.append(row)

    header_t = [PATH_COLUMN, SPLIT_COLUMN, target, target + VARIANCE_SUFFIX]
    if derived_target is not None:
        header_t.append(f"{target}_{derived_target}")
    for file, header, rows in ((ATTRIBUTES_FILE, [PATH_COLUMN, SPLIT_COLUMN, *labels.names], rows_a),
                               (TARGETS_FILE, header_t, rows_t)):
        with open(dst / file, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
    truth = _carry_truth(src / "truth", dst / "truth", ids, place)
    return ConvertResult(out=dst, n_attributes=len(rows_a), n_targets=len(rows_t), skipped=skipped,
                         linked=place.linked, copied=place.copied, truth=truth)


def _carry_truth(src: Path, dst: Path, ids: list[list[str]], place: _Placer) -> bool:
    """Link/copy ``src`` (a ``siam synth`` truth/) into ``dst`` with the CSV path -> masks mapping
    ``dst/csv_ids.csv``; False (nothing written, an earlier copy removed) when ``src`` has no meta.json."""
    if not (src / "meta.json").is_file():
        if dst.is_dir():
            shutil.rmtree(dst)  # a truth from an earlier conversion would not match these rows
        return False
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f.relative_to(src)
        if rel != Path(IDS_FILE):
            place(f, dst / rel)
    tmp = dst / f".{IDS_FILE}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(IDS_HEADER)
        w.writerows(ids)
    os.replace(tmp, dst / IDS_FILE)
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="a folder in the 'siam synth' layout (sun/, son/)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the CSV folder to write (outside --data)")
    parser.add_argument("--copy", action="store_true", help="copy the images (default: hard links, copies only "
                        "across file systems)")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"name of the score column (default {DEFAULT_TARGET})")
    parser.add_argument("--derived-target", choices=DERIVED_TARGETS, default=None,
                        help="add a second target column derived from the score: 'reversed' = 11 - score "
                        "(trained as a second target by 'siam train')")


def run(args: argparse.Namespace) -> int:
    res = convert_to_csv(args.data, args.out, copy=args.copy, target=args.target, derived_target=args.derived_target)
    print(f"siam data to-csv: {res.summary()}")
    return 0
