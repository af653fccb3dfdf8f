"""The SoN attribute set: ScenicOrNot photos labelled with attributes, for evaluation only.

The paper's 90 ScenicOrNot images labelled by 4 annotators (Sec. 4.1). One CSV, header ``id``
followed by the attribute names, one row per image; each value is the fraction of annotators who saw
the attribute, in [0, 1]::

    id,trees,grass,...
    123456,0.75,0,...

Images are ``<id>.jpg`` (or ``.jpeg``) anywhere below ``image_root`` (recursive scan, as for
ScenicOrNot). ``attributes`` selects and orders columns with the SUN matching rules
(:func:`siam.data.sun_attributes.select_columns`); None keeps every column. Every image must exist
by default (``max_missing_fraction=0``): an evaluation set with silent holes is not comparable.

    SonAttributeSet(csv_path, image_root, *, transform=None, attributes=None, image_index=None,
                    max_missing_fraction=0.0, report_path=None, max_megapixels=100.0)

Item ``i`` is a :class:`~siam.data.samples.Sample` with ``image`` (3, H, W), ``attributes`` (K,)
float32, ``id`` = the CSV id, ``source="son_attributes"``, no score.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siam.data.images import DEFAULT_MAX_MEGAPIXELS
from siam.data.robust import ImageDataset, Transform
from siam.data.scenic_or_not import index_images
from siam.data.sun_attributes import select_columns
from siam.errors import DatasetError

__all__ = ["SonAttributeSet", "SonAttributeTable", "read_son_attributes"]


@dataclass(frozen=True)
class SonAttributeTable:
    """``ids`` (N,) as written; ``names`` (K,); ``labels`` (N, K) float32 in [0, 1]."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    labels: np.ndarray


def read_son_attributes(
    csv_path: str | os.PathLike[str], *, attributes: Sequence[str] | None = None
) -> SonAttributeTable:
    """Parse the attribute CSV (format in the module docstring)."""
    path = Path(csv_path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise DatasetError(f"{path}: SoN attribute CSV not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the CSV as UTF-8 text ({exc})") from None
    if not rows or rows[0][0].strip().lower() != "id" or len(rows[0]) < 2:
        found = rows[0] if rows else "an empty file"
        raise DatasetError(
            f"{path}: expected a header 'id,<attribute>,<attribute>,...', found {found}"
        )
    names = tuple(h.strip() for h in rows[0][1:])
    ids: list[str] = []
    values = np.zeros((len(rows) - 1, len(names)), dtype=np.float32)
    for i, r in enumerate(rows[1:]):
        line = i + 2
        if len(r) != len(rows[0]):
            raise DatasetError(f"{path}, line {line}: {len(r)} fields, the header has {len(rows[0])}")
        ids.append(r[0].strip())
        for j, cell in enumerate(r[1:]):
            try:
                v = float(cell)
            except ValueError:
                v = float("nan")
            if not 0.0 <= v <= 1.0:
                raise DatasetError(
                    f"{path}, line {line}, column {names[j]!r}: {cell!r} is not a fraction of "
                    f"annotators in [0, 1]"
                )
            values[i, j] = v
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup or "" in ids:
        raise DatasetError(f"{path}: ids must be unique and non-empty; repeated or empty: {dup or ['']}")
    cols = select_columns(names, attributes, where=str(path))
    chosen = tuple(attributes) if attributes is not None else names
    return SonAttributeTable(ids=tuple(ids), names=chosen, labels=np.ascontiguousarray(values[:, cols]))


class SonAttributeSet(ImageDataset):
    """Labelled SoN photos for attribute evaluation; signature in the module docstring.

    Attributes: ``attributes`` (names, K), ``labels`` (n, K) float32 tensor, ``missing``.
    """

    source = "son_attributes"

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        image_root: str | os.PathLike[str],
        *,
        transform: Transform | None = None,
        attributes: Sequence[str] | None = None,
        image_index: Mapping[str, Path] | None = None,
        max_missing_fraction: float = 0.0,
        report_path: str | os.PathLike[str] | None = None,
        max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    ) -> None:
        super().__init__(transform=transform, max_megapixels=max_megapixels, name="son_attributes")
        table = read_son_attributes(csv_path, attributes=attributes)
        if image_index is None:
            image_index = index_images(image_root)
        keep = self._set_images(
            list(table.ids),
            [image_index.get(i) for i in table.ids],
            max_missing_fraction=max_missing_fraction,
            report_path=report_path,
        )
        self.attributes: tuple[str, ...] = table.names
        self.labels = torch.from_numpy(table.labels[keep])  # (n, K)

    def targets(self, index: int) -> dict[str, Any]:
        return {"attributes": self.labels[index]}
