"""The input list of a scoring job: streamed from the source once, written to the output folder,
then read by every rank in pieces (no rank holds the whole list).

Files (written by rank 0 when the job is created, each under a temporary name then renamed)::

    OUT/_inputs.txt   the ordered input paths, one per line (UTF-8)
    OUT/_inputs.idx   little-endian uint64: the byte offset of each line in _inputs.txt, then the
                      file size (n + 1 values), so line i is bytes [idx[i], idx[i + 1])

Their names start with ``_`` so that ``pyarrow.dataset.dataset(OUT)`` skips them (as it skips
``_manifest.json``) and reads only the Parquet parts.

Memory: the list is written while it is read; the only whole-list array is one 64-bit hash per line
(8 bytes a line) used to find repeated paths, after which exact duplicates are confirmed by comparing
the paths themselves (a hash collision never drops a path); the hashes are spooled to a temporary
file while streaming, so they are in memory once. Readers read the offsets and lines they
need with positioned reads (nothing memory-mapped). This module does not import torch.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siam.errors import SiamError

__all__ = [
    "IMAGE_EXTENSIONS",
    "INPUTS_IDX",
    "INPUTS_TXT",
    "InputList",
    "ListInfo",
    "ScoringError",
    "default_part_size",
    "fingerprint_inputs",
    "iter_inputs",
    "list_inputs",
    "part_rows",
    "rank_parts",
    "temporary_name",
    "write_input_list",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
INPUTS_TXT = "_inputs.txt"
INPUTS_IDX = "_inputs.idx"
DEFAULT_PART_SIZE = 4096  # rows per Parquet part at most, by default
MIN_PART_SIZE = 32  # default parts are never smaller than this ...
TARGET_PARTS = 256  # ... and otherwise about this many per job, so that many ranks all get work
_BATCH = 1 << 14  # paths handled together while streaming
_READ_HINT = 1 << 20  # bytes of a text list read at a time
_IO_BUFFER = 1 << 20
_OFFSET_BYTES = 8
_ENCODING = ("utf-8", "surrogateescape")  # file names that are not UTF-8 survive the round trip


class ScoringError(SiamError, ValueError):
    """A scoring job cannot start or resume (bad input list, output folder, or manifest)."""


# --- reading the source ---------------------------------------------------------------------------

def iter_inputs(source: str | os.PathLike[str]) -> Iterator[str]:
    """The image paths to score, in a stable order, as a stream (repeats in a text list included).

    * a directory: every file below it (recursively, not following directory links) whose
      extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive), in the order of their
      relative paths, walked one folder at a time;
    * a single image file (by extension): just that file;
    * any other file: a UTF-8 text list, one path per line; blank lines and lines starting with
      ``#`` are skipped, relative paths are relative to the list file's folder.
    """
    for batch in _batches(source):
        yield from batch


def _batches(source: str | os.PathLike[str]) -> Iterator[list[str]]:
    """:func:`iter_inputs` in lists of up to a few thousand paths (per-line work in comprehensions)."""
    p = Path(source)
    if p.is_dir():
        found = False
        for batch in _chunked(_walk_sorted(str(p))):
            bad = [path for path in batch if "\n" in path or "\r" in path]
            if bad:
                raise ScoringError(f"input paths must not contain line breaks, got {bad[0]!r}")
            found = True
            yield batch
        if not found:
            raise ScoringError(
                f"no images found under {str(p)!r}; looked recursively for files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)} (case-insensitive)"
            )
    elif p.is_file():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            yield [str(p)]
        else:
            yield from _list_file_batches(p)
    else:
        raise ScoringError(
            f"input not found: {str(p)!r}; expected a directory of images, an image file, or a text "
            "file listing image paths"
        )


def _chunked(paths: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in paths:
        batch.append(path)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _walk_sorted(root: str) -> Iterator[str]:
    """Image files below ``root`` sorted by relative path, holding one folder's listing at a time.

    Sorting each folder's entries with a sub-folder keyed as ``name + "/"`` gives exactly the order
    of sorting the full relative paths (everything below ``d/`` shares that prefix)."""
    try:
        with os.scandir(root) as it:
            entries = []
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    entries.append((e.name + "/", e.path, True))
                elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file():
                    entries.append((e.name, e.path, False))
    except OSError as exc:
        raise ScoringError(f"cannot list the input folder {root!r}: {exc}") from None
    for _, path, is_dir in sorted(entries):
        if is_dir:
            yield from _walk_sorted(path)
        else:
            yield path


def _list_file_batches(p: Path) -> Iterator[list[str]]:
    prefix = "" if str(p.parent) == "." else str(p.parent) + os.sep
    isabs = (lambda e: e[0] == "/") if os.name == "posix" else os.path.isabs
    lines_read = 0
    any_path = False
    try:
        with open(p, encoding="utf-8") as fh:
            for lines in iter(lambda: fh.readlines(_READ_HINT), []):
                lines_read += len(lines)
                entries = [e for e in map(str.strip, lines) if e and e[0] != "#"]
                if entries:
                    any_path = True
                    yield [e if isabs(e) else prefix + e for e in entries]
    except UnicodeDecodeError as exc:
        raise ScoringError(
            f"{str(p)!r} is neither a directory, an image ({', '.join(IMAGE_EXTENSIONS)}) nor a "
            f"UTF-8 text file listing image paths ({exc.reason} after line {lines_read})"
        ) from None
    if not any_path:
        raise ScoringError(f"the input list {str(p)!r} names no image paths (only blank/# lines)")


def list_inputs(source: str | os.PathLike[str]) -> list[str]:
    """:func:`iter_inputs` as a list, repeated paths kept once (first occurrence). Holds the whole
    list in memory: for small jobs and tests; ``siam score`` streams with :func:`write_input_list`."""
    seen: set[str] = set()
    out: list[str] = []
    for path in iter_inputs(source):
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


@dataclass(frozen=True)
class ListInfo:
    """What :func:`write_input_list` wrote: ``num_inputs`` distinct paths, from ``listed`` paths
    read (``repeats`` dropped); ``sha256`` identifies the source's stream (before dropping repeats)."""

    num_inputs: int
    listed: int
    repeats: int
    sha256: str


def _encoded(batch: list[str]) -> tuple[list[bytes], bytes]:
    enc = [path.encode(*_ENCODING) for path in batch]
    return enc, b"\n".join(enc) + b"\n"


def fingerprint_inputs(source: str | os.PathLike[str]) -> tuple[int, str]:
    """``(paths listed, sha256)`` of the source's stream, as :func:`write_input_list` records it."""
    sha = hashlib.sha256()
    count = 0
    for batch in _batches(source):
        sha.update(_encoded(batch)[1])
        count += len(batch)
    return count, sha.hexdigest()


# --- writing the list ------------------------------------------------------------------------------

def temporary_name(final: Path) -> Path:
    """``.NAME.HOST-PID.tmp`` next to ``final``: unique to this process (two ranks never share one),
    and hidden from ``pyarrow.dataset`` by its leading dot."""
    return final.with_name(f".{final.name}.{platform.node()}-{os.getpid()}.tmp")


def _offsets(lines: list[bytes], start: int) -> tuple[bytes, int]:
    """Little-endian uint64 start offsets of ``lines`` (each followed by one newline) from ``start``,
    and the offset after the last."""
    ends = start + np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) + 1)
    starts = np.concatenate(([start], ends[:-1])).astype("<u8")
    return starts.tobytes(), int(ends[-1]) if len(lines) else start


def write_input_list(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> ListInfo:
    """Stream ``source`` (see :func:`iter_inputs`) into ``out/_inputs.txt`` and ``out/_inputs.idx``,
    repeated paths kept once (first occurrence); both files appear atomically (rename)."""
    out = Path(out)
    txt, idx = out / INPUTS_TXT, out / INPUTS_IDX
    txt_tmp, idx_tmp = temporary_name(txt), temporary_name(idx)
    hashes_tmp = temporary_name(out / "_inputs.hashes")
    sha = hashlib.sha256()
    pos = 0
    with open(txt_tmp, "wb", buffering=_IO_BUFFER) as ft, open(idx_tmp, "wb", buffering=_IO_BUFFER) as fi, \
            open(hashes_tmp, "wb", buffering=_IO_BUFFER) as fh:
        for batch in _batches(source):
            enc, blob = _encoded(batch)
            fh.write(np.fromiter(map(hash, enc), dtype=np.int64, count=len(enc)).tobytes())
            sha.update(blob)
            ft.write(blob)
            offs, pos = _offsets(enc, pos)
            fi.write(offs)
        fi.write(np.array([pos], "<u8").tobytes())
    try:
        hashes = np.fromfile(hashes_tmp, dtype=np.int64)  # 8 bytes a line: the only whole-list array
    finally:
        hashes_tmp.unlink()
    listed = len(hashes)
    repeated = _repeated_hashes(hashes)
    del hashes
    repeats = _drop_repeats(txt_tmp, idx_tmp, repeated) if repeated else 0
    for tmp, final in ((idx_tmp, idx), (txt_tmp, txt)):
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    return ListInfo(num_inputs=listed - repeats, listed=listed, repeats=repeats, sha256=sha.hexdigest())


def _repeated_hashes(h: np.ndarray) -> set[int]:
    """Hash values that occur more than once (sorts ``h`` in place: no second copy)."""
    h.sort()
    same = h[1:] == h[:-1]
    return set(np.unique(h[1:][same]).tolist()) if same.any() else set()


def _drop_repeats(txt_tmp: Path, idx_tmp: Path, repeated: set[int]) -> int:
    """Rewrite the temporary list without exact repeats; only lines whose hash is in ``repeated``
    are remembered (their bytes), so a hash collision keeps both paths."""
    seen: dict[int, set[bytes]] = {}
    dropped = 0
    txt2, idx2 = txt_tmp.with_name(txt_tmp.name + "2"), idx_tmp.with_name(idx_tmp.name + "2")
    pos = 0
    with open(txt_tmp, "rb", buffering=_IO_BUFFER) as src, open(txt2, "wb", buffering=_IO_BUFFER) as ft, \
            open(idx2, "wb", buffering=_IO_BUFFER) as fi:
        for lines in iter(lambda: src.readlines(_READ_HINT), []):
            kept = []
            for line in lines:
                data = line[:-1]
                h = hash(data)
                if h in repeated:
                    group = seen.setdefault(h, set())
                    if data in group:
                        dropped += 1
                        continue
                    group.add(data)
                kept.append(data)
            if kept:
                ft.write(b"\n".join(kept) + b"\n")
                offs, pos = _offsets(kept, pos)
                fi.write(offs)
        fi.write(np.array([pos], "<u8").tobytes())
    os.replace(txt2, txt_tmp)
    os.replace(idx2, idx_tmp)
    return dropped


# --- reading the written list ---------------------------------------------------------------------

class InputList:
    """Random access to ``OUT/_inputs.txt`` through ``OUT/_inputs.idx`` with positioned reads
    (no memory map: reading a shard keeps no pages of the list resident). Files are opened lazily,
    so the object pickles into DataLoader workers, each of which opens its own handles."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.txt, self.idx = Path(out) / INPUTS_TXT, Path(out) / INPUTS_IDX
        for f in (self.txt, self.idx):
            if not f.is_file():
                raise ScoringError(f"{str(Path(out))!r}: the input list {f.name} is missing; start a new --out folder")
        size = self.idx.stat().st_size
        if size % _OFFSET_BYTES or size < 2 * _OFFSET_BYTES:
            raise ScoringError(f"{self.idx}: not an offsets index ({size} bytes, expected 8 * (n + 1) with n >= 1)")
        self.n = size // _OFFSET_BYTES - 1
        self._fds: tuple[int, int] | None = None
        end = int(self._offsets(self.n, self.n + 1)[0])
        if end != self.txt.stat().st_size:
            raise ScoringError(
                f"{self.txt}: {self.txt.stat().st_size} bytes, but {self.idx.name} ends at {end}; "
                "the input list is damaged: start a new --out folder"
            )

    def __len__(self) -> int:
        return self.n

    def _pread(self, which: int, size: int, at: int) -> bytes:
        if self._fds is None:
            self._fds = (os.open(self.txt, os.O_RDONLY), os.open(self.idx, os.O_RDONLY))
        chunks = []
        while size > 0:
            chunk = os.pread(self._fds[which], size, at)
            if not chunk:
                raise ScoringError(f"{(self.txt, self.idx)[which]}: ends before byte {at + size}; the list is damaged")
            chunks.append(chunk)
            at += len(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _offsets(self, start: int, stop: int) -> np.ndarray:
        """Offsets ``start .. stop - 1`` (uint64)."""
        raw = self._pread(1, (stop - start) * _OFFSET_BYTES, start * _OFFSET_BYTES)
        return np.frombuffer(raw, dtype="<u8")

    def paths(self, start: int, stop: int) -> list[str]:
        """Inputs ``start .. stop - 1`` (0-based)."""
        if stop <= start:
            return []
        a, b = int(self._offsets(start, start + 1)[0]), int(self._offsets(stop, stop + 1)[0])
        return self._pread(0, b - a, a)[:-1].decode(*_ENCODING).split("\n")

    def path(self, i: int) -> str:
        """Input ``i`` (0-based)."""
        a, b = self._offsets(i, i + 2)
        return self._pread(0, int(b - a), int(a))[:-1].decode(*_ENCODING)

    def __getstate__(self) -> dict:
        return {"txt": self.txt, "idx": self.idx, "n": self.n, "_fds": None}

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", None) or ():
            os.close(fd)


# --- parts and shards ------------------------------------------------------------------------------

def default_part_size(num_inputs: int) -> int:
    """Rows per part when ``--part-size`` is not given: about :data:`TARGET_PARTS` parts, at least
    :data:`MIN_PART_SIZE` and at most :data:`DEFAULT_PART_SIZE` rows each."""
    return min(DEFAULT_PART_SIZE, max(MIN_PART_SIZE, math.ceil(num_inputs / TARGET_PARTS)))


def part_rows(part: int, part_size: int, num_inputs: int) -> range:
    """The input indices of ``part``: ``part * part_size`` up to the next part or the end."""
    return range(part * part_size, min(num_inputs, (part + 1) * part_size))


def rank_parts(num_parts: int, rank: int, world_size: int, done: Sequence[int] | set[int] = ()) -> list[int]:
    """The parts ``rank`` of ``world_size`` scores: those with ``part % world_size == rank`` not yet
    in ``done``. Every unfinished part has exactly one owner whatever ``world_size`` is, and the
    owner does not depend on what other ranks have finished, so ranks never need to agree on a
    snapshot (a resume with another process count is still exact)."""
    if not 0 <= rank < world_size:
        raise ScoringError(f"rank must be in [0, {world_size}), got {rank}")
    finished = set(done)
    return [p for p in range(rank, num_parts, world_size) if p not in finished]
