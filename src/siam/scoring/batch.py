"""Batch scoring of many images into resumable Parquet part files, by one or many processes.

Layout of an output folder ``OUT/`` (names starting with ``_`` or ``.`` are skipped by
``pyarrow.dataset.dataset(OUT)``, which therefore reads exactly the finished parts)::

    OUT/_manifest.json       the job: checkpoint (and its SHA-256), columns, number of inputs, part size
    OUT/_inputs.txt          the ordered input paths, one per line (part p holds rows p*P .. p*P+P-1)
    OUT/_inputs.idx          byte offsets of those lines (see :mod:`siam.scoring.inputs`)
    OUT/part-00000.parquet   one row per input: path, status, error, score, presence_<a>, ...
                             (several targets: score is the first; score_<t>, contribution_<t>_<a> each)
    OUT/_maps/maps-00000.npz optional (``maps="npz"``): attribute maps of the same rows

The job is made once, by rank 0 (:func:`siam.scoring.inputs.write_input_list` streams the input list
into ``_inputs.*``; ``_manifest.json`` is written last), and the other ranks wait for it. Part ``p``
belongs to rank ``p % world_size`` (:func:`~siam.scoring.inputs.rank_parts`). A part is committed by
one atomic rename of its Parquet file (maps first): the set of ``part-*.parquet`` files *is* the
list of finished parts, so no rank can damage another's entries, and :func:`read_manifest` merges
that listing into the manifest on read. After ``kill -9`` of any or all ranks, ``resume=True`` with
any number of processes rewrites the missing parts only, so the finished job has exactly one row
per input. The rank that finds every part done rewrites ``_manifest.json`` with the full listing.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siam.data.images import DEFAULT_MAX_MEGAPIXELS, load_image
from siam.errors import ImageDecodeError
from siam.scoring.distributed import RankInfo, rank_from_env
from siam.scoring.inputs import (
    DEFAULT_PART_SIZE,
    IMAGE_EXTENSIONS,
    INPUTS_IDX,
    INPUTS_TXT,
    InputList,
    ScoringError,
    default_part_size,
    fingerprint_inputs,
    list_inputs,
    part_rows,
    rank_parts,
    temporary_name,
    write_input_list,
)
from siam.scoring.inference import prepare_for_inference, resolve_device, resolve_precision

__all__ = [
    "DEFAULT_PART_SIZE",
    "IMAGE_EXTENSIONS",
    "ScoreSummary",
    "ScoringError",
    "list_inputs",
    "score_images",
    "read_manifest",
    "read_scores",
    "score_columns",
]

MANIFEST = "_manifest.json"
MAPS_DIR = "_maps"
_MANIFEST_V1 = "manifest.json"  # layout 1 (one process, one manifest rewritten per part)
FORMAT = "siam-scores"
VERSION = 2
_PART_RE = re.compile(r"part-(\d+)\.parquet")
_WAIT_FOR_JOB_S = 3600.0  # how long ranks > 0 wait for rank 0 to write the job
_WAIT_NOTE_S = 10.0  # ... saying so after this long
_POLL_S = 0.2
_ERROR_EXAMPLES = 5  # error messages a summary keeps


@dataclass(frozen=True)
class ScoreSummary:
    """What one process of a (possibly resumed, possibly multi-process) scoring run produced.

    ``ok``/``errors``/``parts_written`` count what this process wrote; ``parts_done`` the job's
    finished parts when it ended; ``job_ok``/``job_errors`` the whole job's rows once complete."""

    out: Path
    num_inputs: int
    ok: int
    errors: int
    parts: int
    parts_written: int
    parts_done: int
    complete: bool
    seconds: float
    setup_seconds: float
    precision: str
    rank: int = 0
    world_size: int = 1
    job_ok: int | None = None
    job_errors: int | None = None
    error_examples: tuple[str, ...] = ()


# --- output columns ------------------------------------------------------------------------------

def score_columns(kind: str, attributes: Sequence[str], *, predict_variance: bool = False,
                  targets: Sequence[str] = ("score",)) -> list[str]:
    """The Parquet columns: path, status, error, score, then for a SIAM model ``presence_<name>``
    and ``contribution_<name>`` per attribute, then ``variance`` if the model predicts it.

    A SIAM model with several ``targets``: ``score``, ``contribution_<name>`` and ``variance``
    are the first target's (so readers of one-target folders keep working), and every target
    ``t`` adds ``score_<t>`` (after ``score``), ``contribution_<t>_<name>`` per attribute (after
    the contributions) and ``variance_<t>``. Raises :class:`ScoringError` if two columns would
    share a name (e.g. a target named like an attribute prefix)."""
    several = kind == "siam" and len(targets) > 1
    cols = ["path", "status", "error", "score"]
    if several:
        cols += [f"score_{t}" for t in targets]
    if kind == "siam":
        cols += [f"presence_{a}" for a in attributes] + [f"contribution_{a}" for a in attributes]
    if several:
        cols += [f"contribution_{t}_{a}" for t in targets for a in attributes]
    if predict_variance:
        cols.append("variance")
        if several:
            cols += [f"variance_{t}" for t in targets]
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise ScoringError(f"the output columns {dup} would appear twice for targets {list(targets)} and attributes "
                           f"{list(attributes)}; rename a target")
    return cols


class _Part:
    """Rows of one part being filled (by input index)."""

    def __init__(self, index: int, start: int, paths: Sequence[str], k: int, maps_shape: tuple[int, ...] | None,
                 variance: bool, num_targets: int = 1) -> None:
        n = len(paths)
        self.index, self.start, self.paths = index, start, list(paths)
        self.status = [""] * n
        self.error: list[str | None] = [None] * n
        self.score = np.full(n, np.nan, np.float32)
        self.presence = np.full((n, k), np.nan, np.float32)
        self.contributions = np.full((n, k), np.nan, np.float32)
        self.variance = np.full(n, np.nan, np.float32) if variance else None
        several = num_targets > 1  # every target's outputs (the columns above are the first target's)
        self.scores = np.full((n, num_targets), np.nan, np.float32) if several else None
        self.all_contributions = np.full((n, num_targets, k), np.nan, np.float32) if several else None
        self.variances = np.full((n, num_targets), np.nan, np.float32) if several and variance else None
        self.maps = np.full((n, *maps_shape), np.nan, np.float32) if maps_shape else None
        self.filled = 0

    def done(self) -> bool:
        return self.filled == len(self.paths)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary name unique to this process, then rename (atomic). If another
    rank committed the same file meanwhile and a cleanup removed our temporary file, theirs stands."""
    tmp = temporary_name(path)
    write(tmp)
    try:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except FileNotFoundError:
        if not path.exists():
            raise


def _write_json(path: Path, obj: Any) -> None:
    _write_atomic(path, lambda t: t.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8"))


def _part_table(part: _Part, columns: list[str], attributes: Sequence[str], targets: Sequence[str] = ("score",)):
    import pyarrow as pa

    ok = np.array([s == "ok" for s in part.status])

    def column(values: np.ndarray) -> Any:
        return pa.array(values, pa.float32(), mask=~ok)

    data: dict[str, Any] = {
        "path": pa.array(part.paths, pa.string()),
        "status": pa.array(part.status, pa.string()),
        "error": pa.array(part.error, pa.string()),
        "score": column(part.score),
    }
    for j, a in enumerate(attributes):
        data[f"presence_{a}"] = column(part.presence[:, j])
        data[f"contribution_{a}"] = column(part.contributions[:, j])
    if part.variance is not None:
        data["variance"] = column(part.variance)
    for t, name in enumerate(targets if part.scores is not None else ()):
        data[f"score_{name}"] = column(part.scores[:, t])
        for j, a in enumerate(attributes):
            data[f"contribution_{name}_{a}"] = column(part.all_contributions[:, t, j])
        if part.variances is not None:
            data[f"variance_{name}"] = column(part.variances[:, t])
    return pa.table({c: data[c] for c in columns})


# --- manifest ------------------------------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def part_name(part: int, num_parts: int) -> str:
    """``part-00042.parquet``: zero-padded to sort in input order (5 digits, more if needed)."""
    return f"part-{part:0{max(5, len(str(num_parts - 1)))}d}.parquet"


def _committed(out: Path, num_parts: int) -> dict[int, str]:
    """Finished parts (their Parquet file exists under its final name): part index -> file name."""
    found: dict[int, str] = {}
    with os.scandir(out) as it:
        for e in it:
            m = _PART_RE.fullmatch(e.name)
            if m and int(m.group(1)) < num_parts and e.name == part_name(int(m.group(1)), num_parts):
                found[int(m.group(1))] = e.name
    return found


def _load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.is_file():
        if (out / _MANIFEST_V1).is_file():
            raise ScoringError(
                f"{str(out)!r} was written by an older siam (layout 1, {_MANIFEST_V1}); read its part-*.parquet "
                "files with pyarrow, or score again into a new --out folder"
            )
        raise ScoringError(f"{str(out)!r} is not a siam score folder: {MANIFEST} not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScoringError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ScoringError(f"{path}: format is not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ScoringError(f"{path}: layout version {manifest.get('version')!r}; this siam reads version {VERSION}")
    return manifest


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The job of a scoring folder with its finished parts merged in from the folder listing:
    ``parts`` = ``{"<p>": {"file", "start", "rows"}}`` and ``complete`` (raises
    :class:`ScoringError` if absent or malformed)."""
    out = Path(out)
    manifest = _load_manifest(out)
    n, size, num_parts = manifest["num_inputs"], manifest["part_size"], manifest["num_parts"]
    committed = _committed(out, num_parts)
    manifest["parts"] = {
        str(p): {"file": name, "start": p * size, "rows": len(part_rows(p, size, n))}
        for p, name in sorted(committed.items())
    }
    manifest["complete"] = len(committed) == num_parts
    return manifest


def read_scores(out: str | os.PathLike[str], *, require_complete: bool = True):
    """All finished rows of a scoring folder as one ``pyarrow.Table`` (parts in input order).

    With ``require_complete`` (default) an unfinished job raises :class:`ScoringError` saying how
    many parts are missing and how to finish it. (``pyarrow.dataset.dataset(out)`` reads the same
    rows lazily.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_manifest(out)
    parts = manifest["parts"]
    if require_complete and not manifest["complete"]:
        raise ScoringError(
            f"{str(Path(out))!r}: scoring is unfinished ({len(parts)} of {manifest['num_parts']} parts "
            "done); finish it with 'siam score ... --resume'"
        )
    tables = [pq.read_table(Path(out) / parts[k]["file"]) for k in sorted(parts, key=int)]
    if not tables:
        return pa.table({c: pa.array([], pa.string() if c in ("path", "status", "error") else pa.float32())
                         for c in manifest["columns"]})
    return pa.concat_tables(tables)


def _status_counts(out: Path, files: Sequence[str]) -> tuple[int, int]:
    """(ok, error) rows over ``files`` (reads the status column only)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ok = err = 0
    for f in files:
        status = pq.read_table(out / f, columns=["status"]).column("status")
        ok += int(pc.sum(pc.equal(status, "ok")).as_py() or 0)
        err += int(pc.sum(pc.equal(status, "error")).as_py() or 0)
    return ok, err


# --- data loading --------------------------------------------------------------------------------

class _ImageDataset(torch.utils.data.Dataset):
    """Item ``i`` is row ``i % P`` of part ``parts[i // P]`` (``parts`` ascending, so only the
    last may be the job's short final part); decoded in a worker, a bad file becomes
    ``(index, None, message)``. Paths are read from the stored list, one line per item."""

    def __init__(self, inputs: InputList, parts: Sequence[int], part_size: int, transform: Callable,
                 max_megapixels: float):
        self.inputs, self.parts, self.part_size = inputs, np.asarray(parts, dtype=np.int64), part_size
        self.length = sum(len(part_rows(p, part_size, len(inputs))) for p in parts)
        self.transform, self.max_megapixels = transform, max_megapixels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        k, row = divmod(i, self.part_size)
        idx = int(self.parts[k]) * self.part_size + row
        path = self.inputs.path(idx)
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

_COMPATIBLE = {"checkpoint_sha256": "the checkpoint file", "columns": "the output columns", "maps": "--maps",
               "part_size": "--part-size"}


def _check_compatible(out: Path, manifest: dict[str, Any], fresh: dict[str, Any]) -> None:
    for key, what in _COMPATIBLE.items():
        if fresh.get(key) is not None and manifest.get(key) != fresh[key]:
            raise ScoringError(
                f"cannot resume {str(out)!r}: {what} differs from the interrupted run "
                f"(run: {manifest.get(key)!r}, now: {fresh[key]!r}); resume with the same "
                "arguments or choose a new --out folder"
            )


def _allowed_leftover(name: str) -> bool:
    """What a run killed before writing its manifest can leave: the input list and temporary files."""
    return name in (INPUTS_TXT, INPUTS_IDX) or (name.startswith(".") and name.endswith(".tmp"))


def _create_or_resume(out: Path, source: str | os.PathLike[str], *, resume: bool, fresh: dict[str, Any],
                      ) -> dict[str, Any]:
    """Rank 0: create the job (input list, then manifest), or check the one to resume."""
    if (out / MANIFEST).exists():
        if not resume:
            raise ScoringError(
                f"{str(out)!r} already holds a scoring run ({MANIFEST}); pass --resume to finish it, "
                "or choose a new --out folder"
            )
        manifest = _load_manifest(out)
        _check_compatible(out, manifest, fresh)
        listed, sha = fingerprint_inputs(source)
        if (listed, sha) != (manifest["inputs_listed"], manifest["inputs_sha256"]):
            raise ScoringError(
                f"cannot resume {str(out)!r}: the inputs changed since the run started (now {listed} paths "
                f"listed, then {manifest['inputs_listed']}, or the same number changed or reordered); "
                "resume with the same inputs or choose a new --out"
            )
        return manifest
    if out.exists() and any(not _allowed_leftover(p.name) for p in out.iterdir()):
        raise ScoringError(
            f"--out {str(out)!r} exists and is not empty (and has no {MANIFEST}); choose an empty or "
            "new folder"
        )
    if resume:
        print(f"note: nothing to resume in {str(out)!r}; starting a new run", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    info = write_input_list(source, out)
    part_size = fresh["part_size"] or default_part_size(info.num_inputs)
    manifest = dict(
        fresh, part_size=part_size, input=str(source), num_inputs=info.num_inputs,
        num_parts=math.ceil(info.num_inputs / part_size), inputs_listed=info.listed,
        inputs_repeats=info.repeats, inputs_sha256=info.sha256,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), complete=False,
    )
    _write_json(out / MANIFEST, manifest)
    return manifest


def _join(out: Path, fresh: dict[str, Any], rank: RankInfo) -> dict[str, Any]:
    """Ranks > 0: wait for rank 0 to write the job (only rank 0 writes it), then check it."""
    start = time.monotonic()
    noted = False
    while not (out / MANIFEST).exists():
        waited = time.monotonic() - start
        if waited > _WAIT_FOR_JOB_S:
            raise ScoringError(
                f"rank {rank.rank}: rank 0 did not write {out / MANIFEST} within {_WAIT_FOR_JOB_S:.0f} s; "
                "did rank 0 start, with the same --out?"
            )
        if waited > _WAIT_NOTE_S and not noted:
            print(f"rank {rank.rank}: waiting for rank 0 to write the input list to {out}", file=sys.stderr)
            noted = True
        time.sleep(_POLL_S)
    manifest = _load_manifest(out)
    _check_compatible(out, manifest, fresh)
    return manifest


def _remove_stale(out: Path) -> None:
    """Delete temporary files left by killed runs (never a finished file). Called only when no
    other rank can be writing: at creation, and once every part is done."""
    for folder in (out, out / MAPS_DIR):
        if folder.is_dir():
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)


def _device_for(device: str | None, rank: RankInfo) -> torch.device:
    """``auto``/``cuda`` without an index under several local ranks -> ``cuda:<local rank>``."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and rank.local_world_size > 1:
        dev = torch.device("cuda", rank.local_rank % torch.cuda.device_count())
    return dev


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
    part_size: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    progress: bool | None = None,
    rank: RankInfo | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
) -> ScoreSummary:
    """Score every image of ``source`` (see :func:`siam.scoring.inputs.iter_inputs`) with
    ``checkpoint`` into ``out``, as process ``rank`` of a job (default: from the environment, see
    :func:`siam.scoring.distributed.rank_from_env`; one process when none is set).

    Rank 0 writes the job; every rank scores the unfinished parts it owns (``part % world_size ==
    rank``). Decoding (:func:`siam.data.images.load_image`) and the checkpoint's evaluation
    transform run in ``workers`` DataLoader processes (default: this node's CPUs / its ranks - 1,
    at most 8; 0 decodes in this process); inference uses :func:`prepare_for_inference` with
    ``precision``. Images that cannot be decoded become ``status="error"`` rows with the reason.
    ``progress``: None shows a live bar (rank 0 only) on a terminal and plain lines (no ``\\r``) in
    a log (:func:`siam.progress.progress`); True shows it on every rank, False nowhere. ``manifest_extra``: keys
    written into a new job's manifest (e.g. what the model was trained on).
    ``part_size`` (rows per Parquet part) defaults to
    :func:`~siam.scoring.inputs.default_part_size` for a new job and to the job's own when resuming.
    """
    from siam.checkpoint import checkpoint_file, load_checkpoint, read_meta
    from siam.data.transforms import Preprocessing, eval_transform
    from siam.models.config import ModelConfig
    from siam.scoring.distributed import default_workers

    if batch_size < 1:
        raise ScoringError(f"--batch-size must be >= 1, got {batch_size}")
    if part_size is not None and part_size < 1:
        raise ScoringError(f"--part-size must be >= 1, got {part_size}")
    if maps not in ("none", "npz"):
        raise ScoringError(f"--maps must be 'none' or 'npz', got {maps!r}")
    rank = rank_from_env() if rank is None else rank
    dev = _device_for(device, rank)
    if workers is None:
        workers = default_workers(rank.local_world_size)
    if workers < 0:
        raise ScoringError(f"--workers must be >= 0, got {workers}")
    start_time = time.perf_counter()
    ckpt = checkpoint_file(checkpoint)
    meta = read_meta(ckpt)  # the weights are loaded later, while the workers start decoding
    config = ModelConfig.from_dict(meta["model"])
    kind, attributes = config.kind, list(config.attributes) if config.kind == "siam" else []
    targets = list(getattr(config, "targets", ("score",))) if kind == "siam" else ["score"]
    if maps == "npz" and kind != "siam":
        raise ScoringError(f"--maps npz needs a SIAM checkpoint; {str(ckpt)!r} is a {kind!r} model (score only)")
    columns = score_columns(kind, attributes, predict_variance=config.predict_variance, targets=targets)
    out_dir = Path(out)
    fresh = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": _sha256_file(ckpt),
        "model_kind": kind,
        "attributes": attributes,
        **({"targets": targets} if len(targets) > 1 else {}),
        "columns": columns,
        "part_size": part_size,
        "maps": maps,
        "precision": precision,
        **dict(manifest_extra or {}),
    }
    if rank.rank == 0:
        manifest = _create_or_resume(out_dir, source, resume=resume, fresh=fresh)
    else:
        manifest = _join(out_dir, fresh, rank)
    n, size, num_parts = manifest["num_inputs"], manifest["part_size"], manifest["num_parts"]
    inputs = InputList(out_dir)
    if len(inputs) != n:
        raise ScoringError(f"{out_dir / INPUTS_IDX}: lists {len(inputs)} inputs, the manifest {n}; start a new --out")
    mine = rank_parts(num_parts, rank.rank, rank.world_size, set(_committed(out_dir, num_parts)))
    maps_shape = (len(attributes), config.grid, config.grid) if maps == "npz" else None
    if maps_shape is not None:
        (out_dir / MAPS_DIR).mkdir(exist_ok=True)
    open_parts: dict[int, _Part] = {}

    def part_of(idx: int) -> _Part:
        p = idx // size
        if p not in open_parts:
            rows = part_rows(p, size, n)
            open_parts[p] = _Part(p, rows.start, inputs.paths(rows.start, rows.stop), len(attributes), maps_shape,
                                  config.predict_variance, len(targets))
        return open_parts[p]

    written = ok = errors = 0
    examples: list[str] = []
    precision_used = resolve_precision(precision, dev)
    setup_seconds = time.perf_counter() - start_time
    if mine:
        transform = eval_transform(Preprocessing.from_dict(meta["preprocessing"]))
        dataset = _ImageDataset(inputs, mine, size, transform, max_megapixels)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
            pin_memory=dev.type == "cuda", worker_init_fn=_worker_init if workers else None,
            prefetch_factor=4 if workers else None,
        )
        batches = iter(loader)  # workers fork (small, before the weights exist) and start decoding
        model, autocast = prepare_for_inference(load_checkpoint(ckpt), precision, device=dev)
        precision_used = model.inference_precision
        setup_seconds = time.perf_counter() - start_time
        from siam.progress import progress as progress_counter

        show = rank.rank == 0 if progress is None else progress
        desc = "siam score" if rank.world_size == 1 else f"siam score (rank {rank.rank} of {rank.world_size})"
        bar = progress_counter(total=len(dataset), unit="img", desc=desc, enabled=show, smoothing=0.1)
        try:
            for ok_idx, images, bad in batches:
                arrays: dict[str, np.ndarray] = {}
                if images is not None:
                    with torch.inference_mode(), autocast:
                        arrays = _to_numpy(model(images.to(dev, non_blocking=True)), kind, maps_shape is not None)
                _record(part_of, ok_idx, arrays, bad)
                ok += len(ok_idx)
                errors += len(bad)
                examples += [message for _, message in bad][: max(0, _ERROR_EXAMPLES - len(examples))]
                for p in sorted(k for k, v in open_parts.items() if v.done()):
                    _finish_part(out_dir, open_parts.pop(p), columns, attributes, num_parts, targets)
                    written += 1
                bar.update(len(ok_idx) + len(bad))
        finally:
            bar.close()
    if open_parts:  # pragma: no cover - every index belongs to a part that gets filled
        raise RuntimeError(f"internal error: parts {sorted(open_parts)} were not completed")
    committed = _committed(out_dir, num_parts)
    complete = len(committed) == num_parts
    job_ok = job_errors = None
    if complete:
        job_ok, job_errors = _finish_job(out_dir, manifest, committed)
    return ScoreSummary(
        out=out_dir, num_inputs=n, ok=ok, errors=errors, parts=num_parts, parts_written=written,
        parts_done=len(committed), complete=complete, seconds=time.perf_counter() - start_time,
        setup_seconds=setup_seconds, precision=precision_used, rank=rank.rank, world_size=rank.world_size,
        job_ok=job_ok, job_errors=job_errors, error_examples=tuple(examples),
    )


def _finish_job(out: Path, manifest: dict[str, Any], committed: dict[int, str]) -> tuple[int, int]:
    """Every part is done: write the full listing into the manifest (any rank may; each write is a
    complete, atomic snapshot of the same finished job) and remove killed runs' temporary files."""
    ok, err = _status_counts(out, [committed[p] for p in sorted(committed)])
    n, size = manifest["num_inputs"], manifest["part_size"]
    final = dict(manifest, complete=True, ok=ok, error=err, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 parts={str(p): {"file": f, "start": p * size, "rows": len(part_rows(p, size, n))}
                        for p, f in sorted(committed.items())})
    _write_json(out / MANIFEST, final)
    _remove_stale(out)
    return ok, err


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
        if part.scores is not None:
            part.scores[r] = arrays["scores"][j]
            part.all_contributions[r] = arrays["all_contributions"][j]
        if part.variances is not None:
            part.variances[r] = arrays["variances"][j]
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
        if len(result.targets) > 1:
            arrays["scores"] = result.scores.float().cpu().numpy()  # (B, T)
            arrays["all_contributions"] = result.all_contributions.float().cpu().numpy()  # (B, T, K)
            if result.variances is not None:
                arrays["variances"] = result.variances.float().cpu().numpy()  # (B, T)
    if result.variance is not None:
        arrays["variance"] = result.variance.float().cpu().numpy()  # (B,)
    return arrays


def _finish_part(out: Path, part: _Part, columns: list[str], attributes: Sequence[str], num_parts: int,
                 targets: Sequence[str] = ("score",)) -> None:
    """Commit a finished part: its maps first (if any), then its Parquet file, each renamed into
    place. The Parquet file's rename is the commit."""
    import pyarrow.parquet as pq

    name = part_name(part.index, num_parts)
    if part.maps is not None:
        def write_maps(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, maps=part.maps, path=np.array(part.paths))

        _write_atomic(out / MAPS_DIR / name.replace("part-", "maps-").replace(".parquet", ".npz"), write_maps)
    table = _part_table(part, columns, attributes, targets)
    _write_atomic(out / name, lambda tmp: pq.write_table(table, tmp))
