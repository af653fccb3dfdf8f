"""``siam data download``: fetch the real datasets from their official locations, resumably.

* ``sun-attributes``: the SUN Attribute Database (Patterson & Hays) tarballs
  ``SUNAttributeDB.tar.gz`` (``images.mat``, ``attributes.mat``, ``attributeLabels_continuous.mat``)
  and ``SUNAttributeDB_Images.tar.gz`` (``images/<letter>/<category>/sun_*.jpg``) from
  :data:`SUN_BASE_URL`, unpacked to ``ROOT/{images.mat,attributes.mat,attributeLabels_continuous.mat}``
  and ``ROOT/images/<name>`` (the layout :mod:`siam.data.sun_attributes` reads).
* ``scenicornot``: ScenicOrNot's ``votes.tsv`` from :data:`SON_BASE_URL`, then each row's Geograph
  photo: the photo page named by the row's URI is fetched and the image URL read from it
  (:func:`resolve_geograph_image`), saved under the name :mod:`siam.data.scenic_or_not` reads for
  that votes.tsv format: ``ROOT/images/<ID>.jpg`` for the historical format (columns ``ID, Lat, Lon,
  Average, Variance, Votes, Geograph URI``; the ID is not the photo number), and
  ``ROOT/images/<photo number>.jpg`` for the current export (no ``ID`` column). A file recorded for
  another photo page than its row's URI (a folder filled for the other format) is fetched again.
  Geograph requests are rate limited (``--rate``, default 1 request/s).

Resumable: large files are downloaded to ``<name>.part`` and continued with HTTP ``Range``; small
files that are already complete are skipped. Every finished file is recorded with its sha256 and
size in ``ROOT/download_manifest.jsonl`` (one JSON object per line, last entry per path wins), and
checked against a known checksum when one is given (``--sha256 NAME=HEX``). What could not be
fetched is listed in ``ROOT/missing.tsv`` and summarised on the console (exit status 1 until nothing
is missing). A finished ``votes.tsv`` is not fetched again; delete it to get a newer export. Only
the standard library's ``urllib`` is used; only ``http``/``https`` URLs are accepted.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any

from siam.errors import SiamError

__all__ = [
    "SUN_BASE_URL",
    "SUN_ARCHIVES",
    "SUN_FILES",
    "SON_BASE_URL",
    "DownloadError",
    "DownloadReport",
    "RateLimiter",
    "Manifest",
    "fetch",
    "resolve_geograph_image",
    "download_sun_attributes",
    "download_scenicornot",
    "add_arguments",
    "run",
]

SUN_BASE_URL = "https://cs.brown.edu/~gmpatter/Attributes/"
SUN_ARCHIVES: tuple[str, ...] = ("SUNAttributeDB.tar.gz", "SUNAttributeDB_Images.tar.gz")
SUN_FILES: tuple[str, ...] = ("images.mat", "attributes.mat", "attributeLabels_continuous.mat")
SON_BASE_URL = "http://scenicornot.datasciencelab.co.uk/"
SON_VOTES = "votes.tsv"
# No checksums are published for these files; add them here (or pass --sha256) once known.
KNOWN_SHA256: dict[str, str] = {}
MANIFEST = "download_manifest.jsonl"
MISSING = "missing.tsv"
CHUNK = 1 << 20


class DownloadError(SiamError, RuntimeError):
    """A download failed (HTTP error, checksum mismatch, unusable page or archive)."""


def _user_agent() -> str:
    from siam import __version__

    return f"siam/{__version__} (research dataset downloader; python-urllib)"


def _check_url(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"only http:// and https:// URLs are allowed, got {url!r}")
    return url


def _join(base: str, name: str) -> str:
    return _check_url(base if base.endswith("/") else base + "/") + urllib.parse.quote(name)


class RateLimiter:
    """At most ``rate`` requests per second (spaced evenly); ``rate <= 0`` means no limit."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0

    def wait(self) -> None:
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


class Manifest:
    """Append-only record of finished files: ``{"path", "url", "sha256", "bytes", "time"}`` per line.

    A line cut short by a kill is ignored on reading, so the record is always usable.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / MANIFEST
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "path" in entry:
                    self.entries[entry["path"]] = entry

    def complete(self, rel: str, target: Path) -> bool:
        """Whether ``rel`` was recorded as finished and ``target`` still has the recorded size."""
        entry = self.entries.get(rel)
        return bool(entry) and target.is_file() and target.stat().st_size == entry.get("bytes")

    def record(self, rel: str, **info: Any) -> None:
        entry = {"path": rel, **info, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.entries[rel] = entry
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


@dataclass
class DownloadReport:
    """Counts and what is missing (``missing``: ``(item, url, reason)``)."""

    root: Path
    downloaded: int = 0
    skipped: int = 0
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write_missing(self) -> Path:
        path = self.root / MISSING
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("item\turl\treason\n")
            for item, url, reason in self.missing:
                fh.write(f"{item}\t{url}\t{reason.replace(chr(9), ' ').replace(chr(10), ' ')}\n")
        os.replace(tmp, path)
        return path

    def summary(self) -> str:
        text = f"{self.downloaded} downloaded, {self.skipped} already complete, {len(self.missing)} missing"
        if self.missing:
            text += f" (listed in {self.root / MISSING})"
        return text


# --- HTTP ----------------------------------------------------------------------------------------

def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    return urllib.request.build_opener()


def _open(url: str, *, headers: dict[str, str] | None = None, timeout: float):
    request = urllib.request.Request(_check_url(url), headers={"User-Agent": _user_agent(), **(headers or {})})
    return _opener(url).open(request, timeout=timeout)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    limiter: RateLimiter | None = None,
    progress: bool = False,
) -> tuple[str, int]:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` with HTTP Range); ``(sha256, bytes)``.

    Transient failures (connection errors, HTTP 5xx/429) are retried ``retries`` times with
    backoff, each retry continuing where the last stopped. A checksum mismatch deletes the partial
    file and raises :class:`DownloadError`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, timeout=timeout, limiter=limiter, progress=progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 500, 502, 503, 504) or attempt >= retries:
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if attempt >= retries:
                kept = f"; {part.stat().st_size} bytes kept in {part} for the next run" if part.exists() else ""
                raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}{kept}") from None
        attempt += 1
        time.sleep(min(30.0, 0.5 * 2**attempt))
    digest = _sha256(part)
    expected = (expected_sha256 or "").lower()
    if expected and digest != expected:
        part.unlink()
        raise DownloadError(f"{url}: sha256 {digest} does not match the expected {expected}; the file was deleted")
    size = part.stat().st_size
    os.replace(part, dest)
    return digest, size


def _fetch_once(url: str, part: Path, *, timeout: float, limiter: RateLimiter | None, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    if limiter is not None:
        limiter.wait()
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = _open(url, headers=headers, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is complete
            return
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        elif have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            part.unlink()  # a range we did not ask for: start over on the next attempt
            raise ConnectionError(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        total = response.headers.get("Content-Length")
        total_bytes = int(total) + have if total and total.isdigit() else None
        mode = "ab" if have else "wb"
        received = have
        last = time.monotonic()
        with open(part, mode) as fh:
            while block := response.read(CHUNK):
                fh.write(block)
                received += len(block)
                if progress and time.monotonic() - last > 2:
                    last = time.monotonic()
                    share = f" of {total_bytes / 1e6:.1f}" if total_bytes else ""
                    print(f"  {part.name}: {received / 1e6:.1f}{share} MB", file=sys.stderr)
        if total_bytes is not None and received < total_bytes:
            raise ConnectionError(f"connection closed after {received} of {total_bytes} bytes")


def _fetch_recorded(manifest: Manifest, report: DownloadReport, rel: str, url: str, dest: Path,
                    **kwargs: Any) -> str | None:
    """Skip ``dest`` if the manifest has it complete, else :func:`fetch` and record it.

    Returns its sha256, or None after adding the failure to ``report.missing``."""
    if manifest.complete(rel, dest):
        report.skipped += 1
        return str(manifest.entries[rel]["sha256"])
    try:
        digest, size = fetch(url, dest, **kwargs)
    except DownloadError as exc:
        report.missing.append((rel, url, str(exc)))
        return None
    manifest.record(rel, url=url, sha256=digest, bytes=size)
    report.downloaded += 1
    return digest


def _get_text(url: str, *, timeout: float, limiter: RateLimiter | None) -> str:
    if limiter is not None:
        limiter.wait()
    with _open(url, timeout=timeout) as response:
        charset = response.headers.get_content_charset() or "utf-8"
        return response.read().decode(charset, errors="replace")


def _get_bytes(url: str, *, timeout: float, limiter: RateLimiter | None) -> bytes:
    if limiter is not None:
        limiter.wait()
    with _open(url, timeout=timeout) as response:
        data = response.read()
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and len(data) < int(length):
            raise DownloadError(f"{url}: connection closed after {len(data)} of {length} bytes")
        return data


# --- SUN Attribute Database ----------------------------------------------------------------------

def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's path below ROOT with a leading ``SUNAttributeDB/`` removed; None if unsafe."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or parts[0] in ("/",) or ".." in parts or name.startswith("/"):
        return None
    if parts[0] == "SUNAttributeDB":
        parts = parts[1:]
    return PurePosixPath(*parts) if parts else None


def _extract(archive: Path, root: Path) -> int:
    """Unpack regular files of ``archive`` below ``root`` (see :func:`_safe_member_path`)."""
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                rel = _safe_member_path(member.name)
                if rel is None:
                    raise DownloadError(f"{archive}: refusing unsafe member path {member.name!r}")
                target = root / Path(*rel.parts)
                if target.is_file() and target.stat().st_size == member.size:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                src = tar.extractfile(member)
                assert src is not None  # regular file
                with src, open(tmp, "wb") as fh:
                    shutil.copyfileobj(src, fh, CHUNK)
                os.replace(tmp, target)
                count += 1
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable tar archive ({exc}); delete it to download it again") from None
    return count


def download_sun_attributes(
    root: str | os.PathLike[str],
    *,
    base_url: str = SUN_BASE_URL,
    sha256: dict[str, str] | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    keep_archives: bool = True,
    progress: bool = True,
) -> DownloadReport:
    """Download and unpack the SUN Attribute Database into ``root``; report missing images.

    Archives are kept in ``root/archives`` (unless ``keep_archives=False`` and nothing is missing)
    so that a rerun can restore deleted files without downloading again.
    """
    from siam.data.sun_attributes import read_sun_image_names

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(root)
    report = DownloadReport(root)
    expected = {**KNOWN_SHA256, **(sha256 or {})}
    unpacked_now: set[str] = set()
    archives: dict[str, Path] = {}
    for name in SUN_ARCHIVES:
        url = _join(base_url, name)
        rel = f"archives/{name}"
        archive = archives[name] = root / "archives" / name
        if f"unpacked:{name}" in manifest.entries and not archive.exists():
            report.skipped += 1  # unpacked earlier, archive deleted (--delete-archives)
            continue
        digest = _fetch_recorded(manifest, report, rel, url, archive, expected_sha256=expected.get(name),
                                 timeout=timeout, retries=retries, progress=progress)
        if digest is None:
            continue
        if f"unpacked:{name}" not in manifest.entries or manifest.entries[f"unpacked:{name}"]["sha256"] != digest:
            _extract(archive, root)
            unpacked_now.add(name)
            manifest.record(f"unpacked:{name}", url=url, sha256=digest, bytes=0)
    for name in SUN_FILES:
        if not (root / name).is_file():
            report.missing.append((name, _join(base_url, SUN_ARCHIVES[0]), "not found after unpacking"))
    if (root / "images.mat").is_file():
        names = read_sun_image_names(root)
        absent = [n for n in names if not (root / "images" / n).is_file()]
        images_archive = SUN_ARCHIVES[1]
        if absent and images_archive not in unpacked_now and archives[images_archive].is_file():
            _extract(archives[images_archive], root)  # restore files deleted since the last run
            absent = [n for n in names if not (root / "images" / n).is_file()]
        for n in absent:
            report.missing.append((f"images/{n}", _join(base_url, images_archive), "listed in images.mat, not on disk"))
        report.notes.append(f"{len(names) - len(absent)} of {len(names)} images listed in images.mat are present")
    if not keep_archives:
        for archive in archives.values():
            if archive.is_file() and not report.missing:
                archive.unlink()
    report.write_missing()
    return report


# --- ScenicOrNot + Geograph ----------------------------------------------------------------------

class _PhotoPageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.candidates: dict[str, str] = {}
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "img" and a.get("src"):
            if a.get("id") == "mainphoto" or a.get("itemprop") == "contentUrl":
                self.candidates.setdefault("main", a["src"])
            self.images.append(a["src"])
        elif tag == "meta" and a.get("content"):
            if a.get("property") == "og:image" or a.get("name") == "og:image":
                self.candidates.setdefault("og", a["content"])
            elif a.get("name") == "twitter:image":
                self.candidates.setdefault("twitter", a["content"])
        elif tag == "link" and a.get("href") and "image_src" in a.get("rel", "").split():
            self.candidates.setdefault("link", a["href"])


def resolve_geograph_image(page_html: str, page_url: str) -> str:
    """The full-size photo URL on a Geograph photo page.

    Looks, in order, for the main photo ``<img id="mainphoto">`` (or ``itemprop="contentUrl"``),
    ``<meta property="og:image">``, ``<link rel="image_src">``, ``<meta name="twitter:image">``,
    then the first ``<img>`` under ``/geophotos/`` or ``/photos/``; relative URLs are resolved
    against ``page_url``. Raises :class:`DownloadError` when none is found.
    """
    parser = _PhotoPageParser()
    parser.feed(page_html)
    for key in ("main", "og", "link", "twitter"):
        if key in parser.candidates:
            return _check_url(urllib.parse.urljoin(page_url, parser.candidates[key]))
    for src in parser.images:
        if "/geophotos/" in src or "/photos/" in src:
            return _check_url(urllib.parse.urljoin(page_url, src))
    raise DownloadError(f"{page_url}: no photo found on the page (no main <img>, og:image or image_src)")


def _read_votes(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The format (``"historical"``/``"current"``) and ``(image key, Geograph URI)`` per row, in file order.

    The key is the ``ID`` column (historical format) or, in the current export without it, the
    photo number in the URI (``.../photo/123456``), as :mod:`siam.data.scenic_or_not` reads it.
    """
    import csv
    import re

    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = [h.strip().lower() for h in next(reader, [])]
        if "geograph uri" not in header:
            raise DownloadError(f"{path}: expected a 'Geograph URI' column (and 'ID'), got header {header!r}")
        i_uri = header.index("geograph uri")
        i_id = header.index("id") if "id" in header else None
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise DownloadError(f"{path}:{line_no}: expected {len(header)} tab-separated fields, got {len(row)}")
            uri = row[i_uri].strip()
            if i_id is not None:
                photo_id = row[i_id].strip()
            else:
                m = re.search(r"/photo/(\d+)", uri)
                photo_id = m.group(1) if m else ""
            rows.append((photo_id, uri))
    return ("historical" if i_id is not None else "current"), rows


def download_scenicornot(
    root: str | os.PathLike[str],
    *,
    base_url: str = SON_BASE_URL,
    limit: int | None = None,
    rate: float = 1.0,
    sha256: dict[str, str] | None = None,
    timeout: float = 30.0,
    retries: int = 2,
    images: bool = True,
    progress: bool = True,
) -> DownloadReport:
    """Download votes.tsv and (the first ``limit`` rows') Geograph photos into ``root``."""
    from siam.data.images import decode_image
    from siam.errors import ImageDecodeError

    if limit is not None and limit < 0:
        raise ValueError(f"--limit must be >= 0, got {limit}")
    if rate < 0:
        raise ValueError(f"--rate must be >= 0 requests per second (0 = unlimited), got {rate}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(root)
    report = DownloadReport(root)
    expected = {**KNOWN_SHA256, **(sha256 or {})}
    votes_url = _join(base_url, SON_VOTES)
    votes = root / SON_VOTES
    if _fetch_recorded(manifest, report, SON_VOTES, votes_url, votes, expected_sha256=expected.get(SON_VOTES),
                       timeout=timeout, retries=retries, progress=progress) is None:
        report.write_missing()
        return report
    fmt, rows = _read_votes(votes)
    key = "ID" if fmt == "historical" else "photo number"
    report.notes.append(
        f"votes.tsv is the {fmt} format: photos are saved as images/<{key}>.jpg"
        + ("" if fmt == "historical" else "; its splits (in photo-number order) are not the paper's")
    )
    if limit is not None:
        rows = rows[:limit]
    if not images:
        report.write_missing()
        return report
    limiter = RateLimiter(rate)
    started = time.monotonic()
    replaced = 0
    for n, (photo_id, uri) in enumerate(rows, start=1):
        rel = f"images/{photo_id}.jpg"
        target = root / rel
        if not photo_id.isdigit():
            report.missing.append((rel, uri, f"{key} {photo_id!r} is not a number"))
            continue
        if manifest.complete(rel, target):
            if manifest.entries[rel].get("page") == uri:
                report.skipped += 1
                continue
            target.unlink()  # saved for another row's photo (the other format's key): never keep it
            replaced += 1
        try:
            page_url = _check_url(uri)
            image_url = resolve_geograph_image(_get_text(page_url, timeout=timeout, limiter=limiter), page_url)
            data = _get_bytes(image_url, timeout=timeout, limiter=limiter)
            decode_image(data, name=image_url)  # a real, complete image, not an error page
        except (DownloadError, ImageDecodeError) as exc:
            report.missing.append((rel, uri, str(exc)))
            continue
        except urllib.error.HTTPError as exc:
            report.missing.append((rel, uri, f"HTTP {exc.code} {exc.reason}"))
            continue
        except (urllib.error.URLError, OSError) as exc:
            report.missing.append((rel, uri, f"network error: {getattr(exc, 'reason', exc)}"))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        manifest.record(rel, url=image_url, page=uri, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        report.downloaded += 1
        if progress and (n % 100 == 0 or n == len(rows)):
            rate_now = n / max(time.monotonic() - started, 1e-9)
            print(f"  photos: {n}/{len(rows)} ({rate_now:.2f} rows/s)", file=sys.stderr)
    report.notes.append(f"{len(rows)} votes rows considered" + (f" (--limit {limit})" if limit is not None else ""))
    if replaced:
        report.notes.append(f"{replaced} photos saved earlier under a name that this votes.tsv gives to "
                            f"another photo were deleted and fetched again")
    report.write_missing()
    return report


# --- CLI -----------------------------------------------------------------------------------------

def _parse_sha(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, digest = item.partition("=")
        digest = digest.strip().lower()
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"--sha256 expects NAME=<64 hex digits>, got {item!r}")
        out[name.strip()] = digest
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Download the real datasets (resumable, checksummed, with a report of what is missing). "
        "Rerun the same command to resume; the exit status is 1 while something is missing "
        "(listed in ROOT/missing.tsv). 'siam data to-csv' converts a 'siam synth' folder to the plain "
        "CSV format (attributes.csv, targets.csv)."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    download = actions.add_parser("download", help="download a dataset into --root",
                                  description="Download a dataset into --root.")
    which = download.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    def common(p: argparse.ArgumentParser, default_url: str) -> None:
        p.add_argument("--root", required=True, help="dataset folder to fill")
        p.add_argument("--base-url", default=default_url, help=f"where the files live (default {default_url})")
        p.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                       help="expected sha256 of a downloaded file, by file name (e.g. "
                       "SUNAttributeDB.tar.gz=..., votes.tsv=...; repeatable)")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
        p.add_argument("--retries", type=int, default=3, help="retries per file on network errors (default 3)")
        p.add_argument("--quiet", action="store_true", help="no progress lines")

    sun = which.add_parser("sun-attributes", help="SUN Attribute Database (two tarballs, ~1.8 GB)",
                           description=f"SUN Attribute Database: {', '.join(SUN_ARCHIVES)}, unpacked into --root.")
    common(sun, SUN_BASE_URL)
    sun.add_argument("--delete-archives", action="store_true", help="delete the tarballs after unpacking")
    son = which.add_parser("scenicornot", help="ScenicOrNot votes.tsv and the Geograph photos",
                           description="ScenicOrNot votes.tsv plus one Geograph photo per row, saved as "
                           "images/<ID>.jpg for the historical votes.tsv (with an ID column) or "
                           "images/<photo number>.jpg for the current export (without one), the "
                           "names the loader reads for that format.")
    common(son, SON_BASE_URL)
    son.add_argument("--limit", type=int, default=None, help="only the first N rows' photos")
    son.add_argument("--rate", type=float, default=1.0,
                     help="max Geograph requests per second (default 1; be polite)")
    son.add_argument("--votes-only", action="store_true", help="download votes.tsv but no photos")
    from siam.data import to_csv

    convert = actions.add_parser("to-csv", help="convert a 'siam synth' folder to the plain CSV format",
                                 description="Convert a folder in the 'siam synth' layout (sun/, son/) to the "
                                 "plain CSV format: OUT/attributes.csv, OUT/targets.csv and the images "
                                 "(hard-linked). See README 'Your own data: the CSV format'.")
    to_csv.add_arguments(convert)
    ade = actions.add_parser(
        "masks-from-ade20k", help="convert ADE20K *_seg.png files to class-index masks (mask supervision)",
        description="Decode every ADE20K full-dataset *_seg.png under --ade (class = R / 10 * 256 + G) into "
        "OUT/masks/<image stem>.png, a 16-bit class-index PNG, the layout data.masks reads (see README "
        "'Mask supervision'). With --object-names also write OUT/mask_classes.csv, each class mapped to "
        "a SUN attribute through the shipped ADE20K table (siam/data/ade20k_to_sun33.csv) by name.")
    ade.add_argument("--ade", required=True, help="folder searched recursively for *_seg.png")
    ade.add_argument("--out", required=True, help="output folder (masks/ and mask_classes.csv)")
    ade.add_argument("--object-names", default=None, metavar="FILE",
                     help="text file, line i = the name of class i (1-based), synonyms comma-separated")
    ade.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    if args.action == "masks-from-ade20k":
        from siam.data.masks import convert_ade20k

        counts = convert_ade20k(args.ade, args.out, object_names=args.object_names, show_progress=not args.quiet)
        extra = (f"; {counts['mapped']} of {counts['classes']} classes mapped to attributes in "
                 f"{args.out}/mask_classes.csv" if args.object_names else
                 "; write OUT/mask_classes.csv (class_index,class_name,attribute) or pass --object-names")
        print(f"siam data masks-from-ade20k: wrote {counts['masks']} masks to {args.out}/masks{extra}")
        return 0
    if args.action == "to-csv":
        from siam.data import to_csv

        return to_csv.run(args)
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    sha = _parse_sha(args.sha256)
    if args.dataset == "sun-attributes":
        report = download_sun_attributes(
            args.root, base_url=args.base_url, sha256=sha, timeout=args.timeout, retries=args.retries,
            keep_archives=not args.delete_archives, progress=not args.quiet,
        )
    else:
        report = download_scenicornot(
            args.root, base_url=args.base_url, limit=args.limit, rate=args.rate, sha256=sha,
            timeout=args.timeout, retries=args.retries, images=not args.votes_only, progress=not args.quiet,
        )
    print(f"siam data download {args.dataset}: {report.summary()}")
    for note in report.notes:
        print(f"  {note}")
    for item, _, reason in report.missing[:5]:
        print(f"  missing {item}: {reason}")
    return 0 if not report.missing else 1
