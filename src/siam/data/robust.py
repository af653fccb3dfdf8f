"""Datasets that meet real-world files: the shared image-dataset base, missing-image accounting and
the training wrapper that survives undecodable images.

* :class:`ImageDataset` -- base of every reader, implementing :class:`siam.data.readers.Reader`:
  item ``i`` is the image at ``image_path(i)``, decoded by :func:`siam.data.images.load_image`,
  passed through ``transform`` and returned as a :class:`~siam.data.samples.Sample` with the
  subclass's targets.
* :func:`check_missing_images` -- counts entries whose image file is absent, writes them to a JSON
  report and fails only above ``max_fraction``.
* :class:`SkipBadImages` -- ``SkipBadImages(dataset, *, log_path="bad_images.jsonl",
  max_bad_fraction=0.01)``: for training. When an image fails to decode it appends
  ``{"path", "error", "dataset", "index"}`` as one JSON line to ``log_path``, returns a randomly
  chosen other sample instead (batch sizes stay fixed), and raises
  :class:`~siam.errors.DatasetError` once more than ``max_bad_fraction`` of the dataset's images
  are bad. Default 1 %: a few corrupt downloads are normal, more points at a broken copy.

Worker safety: lines are appended with ``O_APPEND`` in a single ``write`` (atomic on local file
systems), and the bad count is the number of distinct paths logged for this dataset's ``name`` by
*all* workers and earlier runs, re-read from the log whenever a new bad file is found. A path is
logged once, however many epochs meet it; delete the log after fixing the files. Unparseable lines
(a write cut by a kill) are ignored when counting.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from siam.data.images import load_image
from siam.data.readers import Reader
from siam.data.samples import Sample, Source
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import DatasetError, ImageDecodeError

DEFAULT_MAX_BAD_FRACTION: float = 0.01
DEFAULT_MAX_MISSING_FRACTION: float = 0.05

__all__ = [
    "ImageDataset",
    "SkipBadImages",
    "check_missing_images",
    "read_bad_images",
    "DEFAULT_MAX_BAD_FRACTION",
    "DEFAULT_MAX_MISSING_FRACTION",
]

Transform = Callable[[Any], torch.Tensor]


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise DatasetError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


class ImageDataset(Dataset[Sample], Reader):
    """Base class of the readers (:class:`~siam.data.readers.Reader`): one image file per item,
    targets from :meth:`targets`.

    Subclasses set ``source`` and ``name``, fill ``self.paths`` (list of Path) and ``self.ids``
    (list of str) with :meth:`_set_images`, and set those of ``attributes`` / ``labels`` (n, K) /
    ``scores`` / ``variances`` (n,) they have; the others keep the defaults ``()`` / None.
    ``transform`` maps an RGB ``PIL.Image`` to a (3, H, W) float tensor;
    None means :func:`~siam.data.transforms.eval_transform` of the default
    :class:`~siam.data.transforms.Preprocessing` (500 / 450).
    """

    source: Source = "images"

    def __init__(
        self, *, transform: Transform | None, max_megapixels: float, name: str
    ) -> None:
        self.transform: Transform = transform if transform is not None else eval_transform(Preprocessing())
        self.max_megapixels = float(max_megapixels)
        self.name = name
        self.paths: list[Path] = []
        self.ids: list[str] = []
        self.missing: list[str] = []
        self.attributes: tuple[str, ...] = ()
        self.labels: torch.Tensor | None = None  # (n, K) float32
        self.scores: torch.Tensor | None = None  # (n,) float32
        self.variances: torch.Tensor | None = None  # (n,) float32

    def _set_images(
        self,
        ids: Sequence[str],
        paths: Sequence[Path | None],
        *,
        max_missing_fraction: float,
        report_path: str | os.PathLike[str] | None,
    ) -> np.ndarray:
        """Keep the entries whose image exists (:func:`check_missing_images`); return the (n,) mask."""
        keep = check_missing_images(
            ids,
            paths,
            dataset=self.name,
            max_fraction=max_missing_fraction,
            report_path=Path(report_path) if report_path is not None else None,
        )
        self.missing = [i for i, k in zip(ids, keep) if not k]
        self.ids = [i for i, k in zip(ids, keep) if k]
        self.paths = [p for p, k in zip(paths, keep) if k and p is not None]
        return np.asarray(keep, dtype=bool)

    def __len__(self) -> int:
        return len(self.paths)

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for {self.name} with {n} items")
        return i % n

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        return self.paths[self._check_index(index)]

    def targets(self, index: int) -> dict[str, Any]:
        """``attributes`` / ``score`` / ``variance`` of item ``index`` (None where absent)."""
        return {}

    def __getitem__(self, index: int) -> Sample:
        i = self._check_index(index)
        image = load_image(self.paths[i], max_megapixels=self.max_megapixels)
        return Sample(image=self.transform(image), id=self.ids[i], source=self.source, **self.targets(i))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} images)"


def check_missing_images(
    ids: Sequence[str],
    paths: Sequence[Path | None],
    *,
    dataset: str,
    max_fraction: float,
    report_path: Path | None,
) -> list[bool]:
    """Which entries have an image; report and, above ``max_fraction``, refuse the missing ones.

    ``paths[i]`` is None (not found in an index) or a path tested with ``is_file``. When any are
    missing, writes ``report_path`` (JSON: dataset, total, missing, fraction, max_fraction, ids) and
    raises :class:`DatasetError` if ``missing / total > max_fraction``, else warns. Returns the keep
    mask.
    """
    max_fraction = _check_fraction("max_missing_fraction", max_fraction)
    keep = [p is not None and p.is_file() for p in paths]
    missing = [i for i, k in zip(ids, keep) if not k]
    if not missing:
        return keep
    total = len(ids)
    fraction = len(missing) / total
    where = ""
    if report_path is not None:
        report = {
            "dataset": dataset,
            "total": total,
            "missing": len(missing),
            "fraction": fraction,
            "max_fraction": max_fraction,
            "ids": list(missing),
        }
        try:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise DatasetError(
                f"{dataset}: {len(missing)} of {total} images are missing and the report cannot be "
                f"written to {report_path} ({exc.strerror or exc}); pass a writable report_path"
            ) from None
        where = f"; listed in {report_path}"
    if fraction > max_fraction:
        raise DatasetError(
            f"{dataset}: {len(missing)} of {total} images are missing ({fraction:.1%}), above the "
            f"allowed max_missing_fraction={max_fraction:g}{where}; first missing: {missing[:5]}"
        )
    warnings.warn(
        f"{dataset}: {len(missing)} of {total} images are missing and left out{where}; first "
        f"missing: {missing[:5]}",
        stacklevel=3,
    )
    return keep


def read_bad_images(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries of a ``bad_images.jsonl`` log (unparseable lines skipped); [] if absent."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "path" in entry:
            out.append(entry)
    return out


class SkipBadImages(Dataset[Sample]):
    """Training wrapper: undecodable images are logged and replaced, up to ``max_bad_fraction``.

    ``dataset[i]`` must raise :class:`~siam.errors.ImageDecodeError` for a bad image (every
    :class:`ImageDataset` does). The substitute is drawn with torch's global RNG (seeded per
    DataLoader worker). ``name`` keys this dataset's entries in a shared log (default: the
    dataset's ``name`` attribute, else its class name).
    """

    def __init__(
        self,
        dataset: Dataset[Sample],
        *,
        log_path: str | os.PathLike[str] = "bad_images.jsonl",
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
        name: str | None = None,
    ) -> None:
        self.dataset = dataset
        self.log_path = Path(log_path)
        self.max_bad_fraction = _check_fraction("max_bad_fraction", max_bad_fraction)
        self.name = name if name is not None else str(getattr(dataset, "name", type(dataset).__name__))
        self._n = len(dataset)  # type: ignore[arg-type]
        if self._n == 0:
            raise DatasetError(f"{self.name}: cannot wrap an empty dataset")
        self._bad: set[str] = set()
        self._offset = 0

    def __len__(self) -> int:
        return self._n

    @property
    def bad_count(self) -> int:
        """Distinct bad image paths logged for this dataset (all workers, earlier runs)."""
        self._sync()
        return len(self._bad)

    def _sync(self) -> None:
        """Read log lines appended since the last read (by any process)."""
        try:
            with open(self.log_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < self._offset:  # the log was replaced: start over
                    self._bad.clear()
                    self._offset = 0
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            self._bad.clear()
            self._offset = 0
            return
        end = chunk.rfind(b"\n") + 1  # only complete lines
        for line in chunk[:end].splitlines():
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict) and entry.get("dataset") == self.name and "path" in entry:
                self._bad.add(str(entry["path"]))
        self._offset += end

    def _record(self, index: int, exc: ImageDecodeError) -> None:
        self._sync()
        if exc.path not in self._bad:
            entry = {"path": exc.path, "error": exc.reason, "dataset": self.name, "index": int(index)}
            data = (json.dumps(entry) + "\n").encode("utf-8")
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            self._sync()
            self._bad.add(exc.path)
        count = len(self._bad)
        if count > self.max_bad_fraction * self._n:
            raise DatasetError(
                f"{self.name}: {count} of {self._n} images failed to decode ({count / self._n:.1%}), "
                f"above the allowed max_bad_fraction={self.max_bad_fraction:g}; see {self.log_path} "
                f"(last: {exc})"
            )

    def __getitem__(self, index: int) -> Sample:
        idx = int(index)
        for _ in range(self._n):
            try:
                return self.dataset[idx]
            except ImageDecodeError as exc:
                self._record(idx, exc)
                idx = int(torch.randint(self._n, (1,)).item())
        raise DatasetError(
            f"{self.name}: {self._n} attempts in a row met undecodable images; see {self.log_path}"
        )

    def __repr__(self) -> str:
        return f"SkipBadImages({self.dataset!r}, log_path={str(self.log_path)!r})"
