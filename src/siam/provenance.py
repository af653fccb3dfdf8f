"""What a model was trained on, and the note shown when that does not match the image it explains.

Every checkpoint written by ``siam train`` records ``meta["trained_on"]``::

    {"kind": "synthetic" | "real" | "csv" | "mixed",
     "summary": "synthetic planted scenes from `siam synth` (seed 0)",
     "datasets": [{"stage": "sun", "dataset": "sun", "kind": "synthetic", "folder": "data",
                   "generator": "siam synth", "seed": 0}, ...]}

``datasets`` lists this stage's training data after that of the checkpoint it started from
(``init_from``), so a joint model fine-tuned from a synthetic ``sun`` stage still says so. A
``siam synth`` world is recognised by ``truth/meta.json`` with ``"generator": "siam synth"`` in the
data folder or one of its parents; a folder with ``attributes.csv`` / ``targets.csv`` is a CSV
folder; anything else is taken as the real SUN Attributes / ScenicOrNot data. Checkpoints written
before this key existed have kind ``"unknown"`` and get no note.

A model trained (even partly) on synthetic scenes says nothing about photographs: wherever it
explains, serves or scores an image that is not from a ``siam synth`` world (or whose origin is
unknown, e.g. an upload), :func:`synthetic_note` returns a note that the JSON, the figure, the HTML
report, the web page and ``siam score`` show. This module imports neither torch nor training code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "SYNTH_GENERATOR",
    "KINDS",
    "describe_dataset",
    "trained_on_record",
    "trained_on",
    "is_synthetic",
    "synth_world",
    "synthetic_note",
]

SYNTH_GENERATOR = "siam synth"
KINDS = ("synthetic", "real", "csv", "mixed", "unknown")
CSV_FILES = ("attributes.csv", "targets.csv")
_MAX_LEVELS = 4  # DIR/son/images/<id>.jpg: the world is 3 folders up


@lru_cache(maxsize=256)
def _synth_meta(folder: str) -> dict[str, Any] | None:
    """``folder/truth/meta.json`` when it was written by ``siam synth``, else None."""
    meta_path = Path(folder) / "truth" / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("generator") == SYNTH_GENERATOR else None


def synth_world(path: str | os.PathLike[str]) -> Path | None:
    """The ``siam synth`` output folder that ``path`` (a file or folder) lies in, or None."""
    p = Path(path).absolute()
    candidates = ([p] if p.is_dir() else []) + list(p.parents)[:_MAX_LEVELS]
    for folder in candidates:
        if _synth_meta(str(folder)) is not None:
            return folder
    return None


def describe_dataset(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``{kind, folder, ...}`` for one training-data folder (a SUN, SoN or CSV folder)."""
    p = Path(folder)
    world = synth_world(p)
    if world is not None:
        meta = _synth_meta(str(world)) or {}
        return {"kind": "synthetic", "folder": world.name, "generator": SYNTH_GENERATOR, "seed": meta.get("seed")}
    if any((p / name).is_file() for name in CSV_FILES):
        return {"kind": "csv", "folder": p.name}
    return {"kind": "real", "folder": p.name}


def _overall(kinds: Iterable[str]) -> str:
    found = set(kinds)
    if not found:
        return "unknown"
    return found.pop() if len(found) == 1 else "mixed"


def _summary(kind: str, datasets: Sequence[Mapping[str, Any]]) -> str:
    if kind == "synthetic":
        seeds = sorted({str(d.get("seed")) for d in datasets})
        return f"synthetic planted scenes from `siam synth` (seed {', '.join(seeds)}), not photographs"
    if kind == "real":
        names = sorted({str(d.get("dataset")) for d in datasets})
        return "real photographs (" + ", ".join({"sun": "SUN Attributes", "son": "ScenicOrNot"}.get(n, n) for n in names) + ")"
    if kind == "csv":
        return "a CSV folder of the user's own images"
    if kind == "mixed":
        parts = sorted({f"{d.get('dataset')}: {d.get('kind')}" for d in datasets})
        return "partly synthetic planted scenes (" + "; ".join(parts) + ")"
    return "unknown (the checkpoint does not record it)"


def trained_on_record(
    stage: str,
    folders: Mapping[str, str | os.PathLike[str]],
    *,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``trained_on`` entry for a stage trained on ``folders`` (``{"sun": dir, "son": dir}``),
    after ``previous`` (the ``trained_on`` of the checkpoint it started from, if any)."""
    earlier = list((previous or {}).get("datasets") or [])
    if previous and not earlier and previous.get("kind") not in (None, "unknown"):
        earlier = [{"stage": "earlier", "dataset": "?", "kind": previous["kind"]}]
    mine = [{"stage": stage, "dataset": name, **describe_dataset(folder)} for name, folder in folders.items()]
    datasets = earlier + mine
    kind = _overall(d["kind"] for d in datasets if d.get("kind") in KINDS and d["kind"] != "unknown")
    return {"kind": kind, "summary": _summary(kind, datasets), "datasets": datasets}


def trained_on(meta_or_model: Any) -> dict[str, Any]:
    """``trained_on`` of a checkpoint meta dict or a loaded model (``model.meta``); kind
    ``"unknown"`` for checkpoints written before it was recorded."""
    meta = meta_or_model if isinstance(meta_or_model, Mapping) else getattr(meta_or_model, "meta", None)
    record = (meta or {}).get("trained_on")
    if isinstance(record, Mapping) and record.get("kind") in KINDS:
        return dict(record)
    return {"kind": "unknown", "summary": _summary("unknown", []), "datasets": []}


def is_synthetic(record: Mapping[str, Any]) -> bool:
    """True when (part of) the training data were ``siam synth`` scenes."""
    return record.get("kind") in ("synthetic", "mixed")


def synthetic_note(meta_or_model: Any, source: str | os.PathLike[str] | None = None) -> str | None:
    """The note for explaining/scoring an image with a model, or None when none is needed.

    ``source``: the image's file path (None: unknown origin, e.g. an upload). A note is returned
    when the model was trained (even partly) on synthetic scenes and the image is not from a
    ``siam synth`` world.
    """
    record = trained_on(meta_or_model)
    if not is_synthetic(record):
        return None
    if source is not None and synth_world(source) is not None:
        return None
    partly = "partly " if record["kind"] == "mixed" else ""
    return (
        f"Trained {partly}on synthetic planted scenes (`siam synth`), not on photographs: its score "
        "and attribute explanations of a real photograph are not meaningful. Train on real data "
        "(SUN Attributes + ScenicOrNot, or your own) before reading anything into them."
    )
