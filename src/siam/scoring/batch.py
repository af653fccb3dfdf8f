"""Batch scoring of many images into resumable Parquet part files.

Layout of an output folder ``OUT/``::

    OUT/manifest.json        what was asked (checkpoint, inputs, columns) and which parts are done
    OUT/inputs.json          the ordered list of input paths (part i holds rows i*P .. i*P+P-1)
    OUT/part-00000.parquet   one row per input: path, status, error, score, presence_<a>, ...
    OUT/maps-00000.npz       optional (``maps="npz"``): attribute maps of the same rows

Every file is written under a temporary name and renamed when complete; a part counts as done
only once the manifest (also replaced atomically) lists it. After ``kill -9``, ``resume=True``
rewrites the unfinished parts only, so the finished job has exactly one row per input.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from siam.data.images import DEFAULT_MAX_MEGAPIXELS, load_image
from siam.errors import ImageDecodeError, SiamError
from siam.scoring.inference import prepare_for_inference, resolve_device, resolve_precision

__all__ = [
    "IMAGE_EXTENSIONS",
    "ScoreSummary",
    "list_inputs",
    "score_images",
    "read_manifest",
    "read_scores",
    "score_columns",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
MANIFEST = "manifest.json"
INPUTS = "inputs.json"
FORMAT = "siam-scores"
VERSION = 1
DEFAULT_PART_SIZE = 4096


class ScoringError(SiamError, ValueError):
    """A scoring job cannot start or resume (bad input list, output folder, or manifest)."""


@dataclass(frozen=True)
class ScoreSummary:
    """What a (possibly resumed) scoring run produced."""

    out: Path
    num_inputs: int
    ok: int
    errors: int
    parts: int
    parts_written: int
    seconds: float
    setup_seconds: float
    precision: str


# --- inputs --------------------------------------------------------------------------------------

def list_inputs(source: str | os.PathLike[str]) -> list[str]:
    """The image paths to score, in a stable order.

    * a directory: every file below it (recursively) whose extension is one of
      :data:`IMAGE_EXTENSIONS` (case-insensitive), sorted by relative path;
    * a single image file (by extension): just that file;
    * any other file: a UTF-8 text list, one path per line; blank lines and lines starting with
      ``#`` are skipped, relative paths are relative to the list file's folder, and repeated
      paths are kept once (first occurrence).
    """
    p = Path(source)
    if p.is_dir():
        found = sorted(
            (f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()),
            key=lambda f: f.relative_to(p).as_posix(),
        )
        if not found:
            raise ScoringError(
                f"no images found under {str(p)!r}; looked recursively for files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)} (case-insensitive)"
            )
        return [str(f) for f in found]
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return [str(p)]
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ScoringError(
                f"{str(p)!r} is neither a directory, an image ({', '.join(IMAGE_EXTENSIONS)}) nor a "
                f"UTF-8 text file listing image paths ({exc.reason} at byte {exc.start})"
            ) from None
        paths: list[str] = []
        seen: set[str] = set()
        for line in text.splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            full = entry if os.path.isabs(entry) else str(p.parent / entry)
            if full not in seen:
                seen.add(full)
                paths.append(full)
        if not paths:
            raise ScoringError(f"the input list {str(p)!r} names no image paths (only blank/# lines)")
        return paths
    raise ScoringError(
        f"input not found: {str(p)!r}; expected a directory of images, an image file, or a text "
        "file listing image paths"
    )


# --- output columns ------------------------------------------------------------------------------

def score_columns(kind: str, attributes: Sequence[str], *, predict_variance: bool = False) -> list[str]:
    """The Parquet columns: path, status, error, score, then for a SIAM model ``presence_<name>``
    and ``contribution_<name>`` per attribute, then ``variance`` if the model predicts it."""
    cols = ["path", "status", "error", "score"]
    if kind == "siam":
        cols += [f"presence_{a}" for a in attributes] + [f"contribution_{a}" for a in attributes]
    if predict_variance:
        cols.append("variance")
    return cols


class _Part:
    """Rows of one part being filled (by input index)."""

    def __init__(self, index: int, start: int, paths: Sequence[str], k: int, maps_shape: tuple[int, ...] | None,
                 variance: bool) -> None:
        n = len(paths)
        self.index, self.start, self.paths = index, start, list(paths)
        self.status = [""] * n
        self.error: list[str | None] = [None] * n
        self.score = np.full(n, np.nan, np.float32)
        self.presence = np.full((n, k), np.nan, np.float32)
        self.contributions = np.full((n, k), np.nan, np.float32)
        self.variance = np.full(n, np.nan, np.float32) if variance else None
        self.maps = np.full((n, *maps_shape), np.nan, np.float32) if maps_shape else None
        self.filled = 0

    def done(self) -> bool:
        return self.filled == len(self.paths)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, lambda t: t.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8"))


def _part_table(part: _Part, columns: list[str], attributes: Sequence[str]):
    import pyarrow as pa

    ok = np.array([s == "ok" for s in part.status])
    data: dict[str, Any] = {
        "path": pa.array(part.paths, pa.string()),
        "status": pa.array(part.status, pa.string()),
        "error": pa.array(part.error, pa.string()),
        "score": pa.array(part.score, pa.float32(), mask=~ok),
    }
    for j, a in enumerate(attributes):
        data[f"presence_{a}"] = pa.array(part.presence[:, j], pa.float32(), mask=~ok)
    for j, a in enumerate(attributes):
        data[f"contribution_{a}"] = pa.array(part.contributions[:, j], pa.float32(), mask=~ok)
    if part.variance is not None:
        data["variance"] = pa.array(part.variance, pa.float32(), mask=~ok)
    return pa.table({c: data[c] for c in columns})


# --- manifest ------------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a scoring folder (raises :class:`ScoringError` if absent or malformed)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise ScoringError(f"{str(Path(out))!r} is not a siam score folder: {MANIFEST} not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScoringError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ScoringError(f"{path}: format is not {FORMAT!r}")
    return manifest


def read_scores(out: str | os.PathLike[str], *, require_complete: bool = True):
    """All finished rows of a scoring folder as one ``pyarrow.Table`` (parts in input order).

    With ``require_complete`` (default) an unfinished job raises :class:`ScoringError` saying how
    many parts are missing and how to finish it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_manifest(out)
    parts = manifest["parts"]
    if require_complete and not manifest.get("complete"):
        raise ScoringError(
            f"{str(Path(out))!r}: scoring is unfinished ({len(parts)} of {manifest['num_parts']} parts "
            "done); finish it with 'siam score ... --resume'"
        )
    tables = [pq.read_table(Path(out) / parts[k]["file"]) for k in sorted(parts, key=int)]
    if not tables:
        return pa.table({c: pa.array([], pa.string() if c in ("path", "status", "error") else pa.float32())
                         for c in manifest["columns"]})
    return pa.concat_tables(tables)


# --- data loading --------------------------------------------------------------------------------

class _ImageDataset(torch.utils.data.Dataset):
    """Decodes ``paths[indices[i]]`` in a worker; bad files become ``(index, None, message)``."""

    def __init__(self, paths: Sequence[str], indices: Sequence[int], transform: Callable, max_megapixels: float):
        self.paths, self.indices = paths, list(indices)
        self.transform, self.max_megapixels = transform, max_megapixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        idx = self.indices[i]
        path = self.paths[idx]
        try:
            image = self.transform(load_image(path, max_megapixels=self.max_megapixels))
        except ImageDecodeError as exc:
            return idx, None, str(exc)
        except (OSError, ValueError, RuntimeError) as exc:
            return idx, None, f"{path}: could not be preprocessed ({type(exc).__name__}: {exc})"
        return idx, image, None


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]):
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, e) for i, x, e in items if x is None]
    images = torch.stack([x for _, x in good]) if good else None  # (B_ok, 3, H, W)
    return [i for i, _ in good], images, bad


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


# --- the job -------------------------------------------------------------------------------------

def _remove_stale(out: Path) -> None:
    """Delete temporary files left by a killed run (they are never listed in the manifest)."""
    for stale in out.glob(".*.tmp"):
        stale.unlink()


def _prepare_out(out: Path, *, resume: bool, fresh: dict[str, Any], inputs: list[str]) -> dict[str, Any]:
    """Create or validate the output folder; return the manifest to continue from."""
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        if not resume:
            raise ScoringError(
                f"{str(out)!r} already holds a scoring run ({MANIFEST}); pass --resume to finish it, "
                "or choose a new --out folder"
            )
        manifest = read_manifest(out)
        for key in ("checkpoint_sha256", "columns", "part_size", "maps", "num_inputs"):
            if manifest.get(key) != fresh.get(key):
                what = {"checkpoint_sha256": "the checkpoint file", "columns": "the output columns",
                        "part_size": "--part-size", "maps": "--maps", "num_inputs": "the number of inputs"}[key]
                raise ScoringError(
                    f"cannot resume {str(out)!r}: {what} differs from the interrupted run "
                    f"(run: {manifest.get(key)!r}, now: {fresh.get(key)!r}); resume with the same "
                    "arguments or choose a new --out folder"
                )
        stored = json.loads((out / INPUTS).read_text(encoding="utf-8"))
        if stored != inputs:
            added = len(set(inputs) - set(stored))
            removed = len(set(stored) - set(inputs))
            raise ScoringError(
                f"cannot resume {str(out)!r}: the inputs changed since the run started ({added} added, "
                f"{removed} removed, or reordered); resume with the same inputs or choose a new --out"
            )
        _remove_stale(out)
        return manifest
    # A run killed before its first manifest leaves at most inputs.json and temporary files.
    if out.exists() and any(p.name != INPUTS and not p.name.endswith(".tmp") for p in out.iterdir()):
        raise ScoringError(
            f"--out {str(out)!r} exists and is not empty (and has no {MANIFEST}); choose an empty or "
            "new folder"
        )
    if resume:
        print(f"note: nothing to resume in {str(out)!r}; starting a new run")
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    _write_json(out / INPUTS, inputs)
    manifest = dict(fresh, parts={}, complete=False, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _write_json(out / MANIFEST, manifest)
    return manifest


def score_images(
    checkpoint: str | os.PathLike[str],
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    batch_size: int = 16,
    workers: int | None = None,
    resume: bool = False,
    maps: str = "none",
    precision: str = "auto",
    device: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: bool | None = None,
) -> ScoreSummary:
    """Score every image of ``source`` (see :func:`list_inputs`) with ``checkpoint`` into ``out``.

    Decoding (:func:`siam.data.images.load_image`) and the checkpoint's evaluation transform run in
    ``workers`` DataLoader processes (default: CPU count - 1, at most 8; 0 decodes in this
    process); inference uses :func:`prepare_for_inference` with ``precision``. Images that cannot
    be decoded become ``status="error"`` rows with the reason. ``progress``: None or True shows a
    live bar on a terminal and plain lines (no ``\\r``) in a log (:func:`siam.progress.progress`);
    False shows nothing.
    """
    from siam.checkpoint import load_checkpoint, read_meta
    from siam.data.transforms import Preprocessing, eval_transform
    from siam.models.config import ModelConfig

    if batch_size < 1:
        raise ScoringError(f"--batch-size must be >= 1, got {batch_size}")
    if part_size < 1:
        raise ScoringError(f"--part-size must be >= 1, got {part_size}")
    if maps not in ("none", "npz"):
        raise ScoringError(f"--maps must be 'none' or 'npz', got {maps!r}")
    dev = resolve_device(device)
    if workers is None:
        workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    if workers < 0:
        raise ScoringError(f"--workers must be >= 0, got {workers}")
    start_time = time.perf_counter()
    ckpt = Path(checkpoint)
    inputs = list_inputs(source)
    bad_paths = [p for p in inputs if "\n" in p or "\r" in p]
    if bad_paths:
        raise ScoringError(f"input paths must not contain line breaks, got {bad_paths[:1]!r}")
    meta = read_meta(ckpt)  # the weights are loaded later, while the workers start decoding
    config = ModelConfig.from_dict(meta["model"])
    kind, attributes = config.kind, list(config.attributes) if config.kind == "siam" else []
    if maps == "npz" and kind != "siam":
        raise ScoringError(f"--maps npz needs a SIAM checkpoint; {str(ckpt)!r} is a {kind!r} model (score only)")
    columns = score_columns(kind, attributes, predict_variance=config.predict_variance)
    out_dir = Path(out)
    fresh = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": _sha256_file(ckpt),
        "model_kind": kind,
        "attributes": attributes,
        "columns": columns,
        "input": str(source),
        "num_inputs": len(inputs),
        "part_size": part_size,
        "num_parts": math.ceil(len(inputs) / part_size),
        "maps": maps,
    }
    manifest = _prepare_out(out_dir, resume=resume, fresh=fresh, inputs=inputs)
    done = {int(k) for k in manifest["parts"]}
    todo = [p for p in range(fresh["num_parts"]) if p not in done]
    indices = [i for p in todo for i in range(p * part_size, min(len(inputs), (p + 1) * part_size))]
    maps_shape = (len(attributes), config.grid, config.grid) if maps == "npz" else None
    variance = config.predict_variance
    open_parts: dict[int, _Part] = {}

    def part_of(idx: int) -> _Part:
        p = idx // part_size
        if p not in open_parts:
            s = p * part_size
            open_parts[p] = _Part(p, s, inputs[s : s + part_size], len(attributes), maps_shape, variance)
        return open_parts[p]

    written = 0
    precision_used = str(manifest.get("precision", resolve_precision(precision, dev)))
    setup_seconds = time.perf_counter() - start_time
    if indices:
        transform = eval_transform(Preprocessing.from_dict(meta["preprocessing"]))
        loader = torch.utils.data.DataLoader(
            _ImageDataset(inputs, indices, transform, max_megapixels), batch_size=batch_size, shuffle=False,
            num_workers=workers, collate_fn=_collate, pin_memory=dev.type == "cuda",
            worker_init_fn=_worker_init if workers else None, prefetch_factor=4 if workers else None,
        )
        batches = iter(loader)  # workers fork (small, before the weights exist) and start decoding
        model, autocast = prepare_for_inference(load_checkpoint(ckpt), precision, device=dev)
        manifest["precision"] = precision_used = model.inference_precision
        setup_seconds = time.perf_counter() - start_time
        from siam.progress import progress as progress_counter

        bar = progress_counter(total=len(inputs), initial=len(inputs) - len(indices), unit="img",
                               desc="siam score", enabled=progress, smoothing=0.1)
        try:
            for ok_idx, images, bad in batches:
                arrays: dict[str, np.ndarray] = {}
                if images is not None:
                    with torch.inference_mode(), autocast:
                        arrays = _to_numpy(model(images.to(dev, non_blocking=True)), kind, maps_shape is not None)
                _record(part_of, ok_idx, arrays, bad)
                for p in sorted(k for k, v in open_parts.items() if v.done()):
                    _finish_part(out_dir, open_parts.pop(p), manifest, columns, attributes)
                    written += 1
                bar.update(len(ok_idx) + len(bad))
        finally:
            bar.close()
    if open_parts:  # pragma: no cover - every index belongs to a part that gets filled
        raise RuntimeError(f"internal error: parts {sorted(open_parts)} were not completed")
    manifest["complete"] = len(manifest["parts"]) == fresh["num_parts"]
    _write_json(out_dir / MANIFEST, manifest)
    return ScoreSummary(
        out=out_dir, num_inputs=len(inputs), ok=sum(v["ok"] for v in manifest["parts"].values()),
        errors=sum(v["error"] for v in manifest["parts"].values()), parts=fresh["num_parts"],
        parts_written=written, seconds=time.perf_counter() - start_time, setup_seconds=setup_seconds,
        precision=precision_used,
    )


def _record(part_of: Callable[[int], _Part], ok_idx: list[int], arrays: dict[str, np.ndarray],
            bad: list[tuple[int, str]]) -> None:
    """Store one batch's outputs (row ``j`` of ``arrays`` is input ``ok_idx[j]``) and errors."""
    for idx, message in bad:
        part = part_of(idx)
        r = idx - part.start
        part.status[r], part.error[r] = "error", message
        part.filled += 1
    for j, idx in enumerate(ok_idx):
        part = part_of(idx)
        r = idx - part.start
        part.status[r] = "ok"
        part.score[r] = arrays["score"][j]
        if "presence" in arrays:
            part.presence[r] = arrays["presence"][j]
            part.contributions[r] = arrays["contributions"][j]
        if part.variance is not None:
            part.variance[r] = arrays["variance"][j]
        if part.maps is not None:
            part.maps[r] = arrays["maps"][j]
        part.filled += 1


def _to_numpy(result: Any, kind: str, with_maps: bool) -> dict[str, np.ndarray]:
    arrays = {"score": result.score.float().cpu().numpy()}  # (B,)
    if kind == "siam":
        arrays["presence"] = result.presence.float().cpu().numpy()  # (B, K)
        arrays["contributions"] = result.contributions.float().cpu().numpy()  # (B, K)
        if with_maps:
            arrays["maps"] = result.maps.float().cpu().numpy()  # (B, K, m, m)
    if result.variance is not None:
        arrays["variance"] = result.variance.float().cpu().numpy()  # (B,)
    return arrays


def _finish_part(out: Path, part: _Part, manifest: dict[str, Any], columns: list[str],
                 attributes: Sequence[str]) -> None:
    """Write a finished part (maps first, then Parquet), then record it in the manifest."""
    import pyarrow.parquet as pq

    name = f"part-{part.index:05d}.parquet"
    entry: dict[str, Any] = {
        "file": name,
        "start": part.start,
        "rows": len(part.paths),
        "ok": part.status.count("ok"),
        "error": part.status.count("error"),
    }
    if part.maps is not None:
        maps_name = f"maps-{part.index:05d}.npz"

        def write_maps(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, maps=part.maps, path=np.array(part.paths))

        _write_atomic(out / maps_name, write_maps)
        entry["maps_file"] = maps_name
    table = _part_table(part, columns, attributes)
    _write_atomic(out / name, lambda tmp: pq.write_table(table, tmp))
    manifest["parts"][str(part.index)] = entry
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(out / MANIFEST, manifest)
