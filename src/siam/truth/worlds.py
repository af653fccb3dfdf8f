"""A planted world's parts in either layout: the ``siam synth`` folder or its CSV copy.

``siam truth``, the oracle-f ceiling and the quickstart read a world through these, so the same
code runs on a world it did not generate: the layout is detected from the folder's contents
(:func:`siam.data.csv_folder.data_layout`), the truth must be there in that layout's form
(``truth/``; a CSV folder's also maps its paths to the masks, ``truth/csv_ids.csv``), and images
are named as that layout names them (ScenicOrNot ID / SUN row, or the CSV path), which
:class:`~siam.evaluation.planted.PlantedTruth` resolves.

CSV rows in the ScenicOrNot role are the rows of targets.csv, in the SUN role those of
attributes.csv; rows without a ``split`` get the split drawn with ``seed`` (as ``siam train`` does
with ``data.split_seed``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from siam.data.readers import son_reader, sun_reader
from siam.errors import DatasetError
from siam.evaluation.planted import PlantedTruth, load_csv_truth, load_truth

__all__ = ["world_truth", "require_truth", "son_set", "sun_set", "attribute_names", "TRUTH_HELP"]

#: How to get a planted world in either layout (the end of every "needs planted truth" error).
TRUTH_HELP = ("generate one with 'siam synth --out WORLD' (or use a quickstart's DIR/data), and for the CSV "
              "format convert it with 'siam data to-csv --data WORLD --out CSV', which carries truth/")


def _layout(root: str | os.PathLike[str]) -> str:
    from siam.data.csv_folder import data_layout

    return data_layout(root)


def world_truth(root: str | os.PathLike[str]) -> PlantedTruth | None:
    """The planted truth of the world ``root`` in its layout's form, or None when it has none."""
    r = Path(root)
    if _layout(r) == "csv":
        return load_csv_truth(r)
    return load_truth(r / "truth") if (r / "truth" / "meta.json").is_file() else None


def require_truth(root: str | os.PathLike[str], *, what: str) -> PlantedTruth:
    """:func:`world_truth`, or a :class:`DatasetError` saying that ``what`` needs planted truth and how to get it."""
    truth = world_truth(root)
    if truth is None:
        raise DatasetError(f"--data {str(root)!r} has no planted truth (truth/meta.json): {what} measures explanations "
                           f"against what was planted, so it needs a planted world; {TRUTH_HELP}")
    return truth


#: The world's ScenicOrNot-role / SUN-role images of a split, in either layout (``siam.data.readers``).
son_set = son_reader
sun_set = sun_reader


def attribute_names(root: str | os.PathLike[str], attributes: Sequence[str] | None = None) -> tuple[str, ...]:
    """The world's attribute label columns (selected by ``attributes``): SUN files or attributes.csv."""
    r = Path(root)
    if _layout(r) == "csv":
        from siam.data.csv_folder import csv_attribute_names

        names = csv_attribute_names(r, attributes)
        if names is None:
            raise DatasetError(f"{r}: attributes.csv not found; the attribute labels (the SUN role) are read from it")
        return names
    from siam.data.sun_attributes import read_sun_labels

    return tuple(read_sun_labels(r / "sun", attributes=attributes).names)
