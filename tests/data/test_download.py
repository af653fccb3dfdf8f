"""``siam data download`` against a local HTTP server on 127.0.0.1 (no test touches the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from siam.cli import main
from siam.data.download import DownloadError, RateLimiter, _extract, download_sun_attributes, resolve_geograph_image
from siam.vocab import SUN33

SUN_NAMES = ["a/abbey/sun_aaa.jpg", "b/beach/sun_bbb.jpg", "c/coast/sun_ccc.jpg", "m/mountain/sun_ddd.jpg"]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection that is not to 127.0.0.1."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        host = address[0]
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {host!r}; only 127.0.0.1 is allowed")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


@dataclass
class Server:
    """Serves ``routes`` (path -> bytes) with HTTP Range support; logs (path, Range header)."""

    routes: dict[str, bytes] = field(default_factory=dict)
    cut_once: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before dropping
    log: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture()
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            rng = self.headers.get("Range")
            state.log.append((path, rng))
            if path not in state.routes:
                self.send_error(404, "Not Found")
                return
            body = state.routes[path]
            start = 0
            if rng:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Content-Type", "text/html; charset=utf-8" if path.startswith("/photo/") else
                             "application/octet-stream")
            self.end_headers()
            if path in state.cut_once:
                self.wfile.write(payload[: state.cut_once.pop(path)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _jpeg(photos_dir: Path, index: int, side: int = 64) -> bytes:
    src = sorted(p for p in photos_dir.iterdir() if p.suffix == ".jpg")[index]
    with Image.open(src) as im:
        im.draft("RGB", (side * 4, side * 4))
        im = im.convert("RGB").resize((side, side))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _mat(**variables: object) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    return buf.getvalue()


@pytest.fixture()
def sun_archives(photos_dir: Path) -> dict[str, bytes]:
    names = np.empty((len(SUN_NAMES), 1), dtype=object)
    for i, n in enumerate(SUN_NAMES):
        names[i, 0] = n
    attrs = np.empty((len(SUN33), 1), dtype=object)
    for i, n in enumerate(SUN33):
        attrs[i, 0] = n
    labels = np.random.default_rng(0).integers(0, 4, (len(SUN_NAMES), len(SUN33))) / 3
    meta = _tar({
        "SUNAttributeDB/images.mat": _mat(images=names),
        "SUNAttributeDB/attributes.mat": _mat(attributes=attrs),
        "SUNAttributeDB/attributeLabels_continuous.mat": _mat(labels_cv=labels),
        "SUNAttributeDB/README.txt": b"fixture\n",
    })
    images = _tar({f"images/{n}": _jpeg(photos_dir, i) for i, n in enumerate(SUN_NAMES)})
    return {"/Attributes/SUNAttributeDB.tar.gz": meta, "/Attributes/SUNAttributeDB_Images.tar.gz": images}


def _manifest(root: Path) -> dict[str, dict]:
    entries = [json.loads(line) for line in (root / "download_manifest.jsonl").read_text().splitlines()]
    return {e["path"]: e for e in entries}


def test_sun_download_resumes_with_range_verifies_checksums_and_loads(
    server: Server, sun_archives: dict[str, bytes], tmp_path: Path
) -> None:
    from siam.data.sun_attributes import SunAttributes

    server.routes.update(sun_archives)
    big = "/Attributes/SUNAttributeDB_Images.tar.gz"
    half = len(sun_archives[big]) // 2
    server.cut_once[big] = half  # the connection drops half-way through the first attempt
    root = tmp_path / "sun"
    base = ["data", "download", "sun-attributes", "--root", str(root), "--base-url", f"{server.url}/Attributes/",
            "--quiet"]
    assert main([*base, "--retries", "0"]) == 1  # incomplete: reported, partial file kept
    assert "SUNAttributeDB_Images.tar.gz" in (root / "missing.tsv").read_text()
    assert (root / "archives" / "SUNAttributeDB_Images.tar.gz.part").stat().st_size == half
    digest = hashlib.sha256(sun_archives[big]).hexdigest()
    assert main([*base, "--retries", "0", "--sha256", f"SUNAttributeDB_Images.tar.gz={digest}"]) == 0
    assert (big, f"bytes={half}-") in server.log  # resumed where it stopped, not from zero
    assert sum(1 for p, _ in server.log if p == "/Attributes/SUNAttributeDB.tar.gz") == 1  # not fetched twice
    manifest = _manifest(root)
    assert manifest["archives/SUNAttributeDB_Images.tar.gz"]["sha256"] == digest
    assert manifest["archives/SUNAttributeDB.tar.gz"]["sha256"] == hashlib.sha256(
        sun_archives["/Attributes/SUNAttributeDB.tar.gz"]).hexdigest()
    assert (root / "missing.tsv").read_text().splitlines() == ["item\turl\treason"]
    # The project's own loader reads the result.
    dataset = SunAttributes(root, split="all")
    assert len(dataset) == len(SUN_NAMES) and dataset.attributes == SUN33
    assert dataset[0].image.shape[0] == 3
    # A deleted image is reported and restored from the kept archive without any download.
    (root / "images" / SUN_NAMES[1]).unlink()
    requests = len(server.log)
    assert main(base) == 0
    assert (root / "images" / SUN_NAMES[1]).is_file() and len(server.log) == requests


def test_sun_checksum_mismatch_deletes_the_file_and_reports_it(
    server: Server, sun_archives: dict[str, bytes], tmp_path: Path
) -> None:
    server.routes.update(sun_archives)
    report = download_sun_attributes(tmp_path, base_url=f"{server.url}/Attributes/", progress=False, retries=0,
                                     sha256={"SUNAttributeDB.tar.gz": "0" * 64})
    reasons = {item: reason for item, _, reason in report.missing}
    assert "does not match the expected 000" in reasons["archives/SUNAttributeDB.tar.gz"]
    assert not (tmp_path / "archives" / "SUNAttributeDB.tar.gz").exists()
    assert not (tmp_path / "archives" / "SUNAttributeDB.tar.gz.part").exists()
    assert "images.mat" in reasons  # the label files never arrived


def test_unsafe_archive_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar({"../evil.txt": b"x"}))
    with pytest.raises(DownloadError, match="refusing unsafe member path '../evil.txt'"):
        _extract(archive, tmp_path / "root")
    assert not (tmp_path / "evil.txt").exists()


def _page(img: str, *, style: str) -> bytes:
    if style == "main":
        body = f'<div class="photo"><img src="{img}" id="mainphoto" alt="x" width="640"></div>'
        head = '<meta property="og:image" content="/thumb.jpg">'  # lower priority than the main photo
    elif style == "og":
        body, head = '<img src="/templates/logo.png">', f'<meta property="og:image" content="{img}">'
    else:
        body, head = '<p>This photo has been removed.</p><img src="/templates/logo.png">', ""
    return f"<!DOCTYPE html><html><head>{head}<title>t</title></head><body>{body}</body></html>".encode()


def test_resolve_geograph_image_from_fixture_pages() -> None:
    page = "https://www.geograph.org.uk/photo/123"
    main_html = _page("https://s0.geograph.org.uk/geophotos/00/01/23/123_abc.jpg", style="main").decode()
    assert resolve_geograph_image(main_html, page) == "https://s0.geograph.org.uk/geophotos/00/01/23/123_abc.jpg"
    assert resolve_geograph_image(_page("/photos/1_x.jpg", style="og").decode(), page) == \
        "https://www.geograph.org.uk/photos/1_x.jpg"
    plain = '<html><body><img src="/templates/logo.png"><img src="../geophotos/0/1_y.jpg"></body></html>'
    assert resolve_geograph_image(plain, page) == "https://www.geograph.org.uk/geophotos/0/1_y.jpg"
    with pytest.raises(DownloadError, match="no photo found"):
        resolve_geograph_image(_page("", style="none").decode(), page)
    with pytest.raises(DownloadError, match="only http:// and https://"):
        resolve_geograph_image('<img id="mainphoto" src="file:///etc/passwd">', page)


# Historical ID -> Geograph photo number: never equal (as in the real file, where ID 1 is photo 7),
# and photos 11 and 12 are also IDs of other rows.
SON_PHOTO = {11: 107, 12: 11, 13: 313, 14: 12, 15: 509}


def _son_votes(url: str, *, historical: bool) -> bytes:
    """votes.tsv over :data:`SON_PHOTO` (Average 4.5 + row) in the historical or the current format."""
    rows = ["\t".join((["ID"] if historical else []) + ["Lat", "Lon", "Average", "Variance", "Votes", "Geograph URI"])]
    for k, (pid, photo) in enumerate(SON_PHOTO.items()):
        cells = [f"5{k}.1", f"-1.{k}", f"{4 + k}.5", "1.2", "4,5,6", f"{url}/photo/{photo}"]
        rows.append("\t".join(([str(pid)] if historical else []) + cells))
    return ("\n".join(rows) + "\n").encode()


def _son_routes(server: Server, photos_dir: Path) -> None:
    p = {pid: f"/photo/{photo}" for pid, photo in SON_PHOTO.items()}
    server.routes["/data/votes.tsv"] = _son_votes(server.url, historical=True)
    server.routes[p[11]] = _page("/geophotos/00/00/11_a.jpg", style="main")
    server.routes[p[12]] = _page(f"{server.url}/geophotos/00/00/12_b.jpg", style="og")
    server.routes[p[13]] = _page("", style="none")  # no photo on the page
    server.routes[p[14]] = _page("/geophotos/00/00/14_d.jpg", style="main")  # image is HTML, not JPEG
    server.routes[p[15]] = _page("/geophotos/00/00/15_e.jpg", style="main")
    server.routes["/geophotos/00/00/11_a.jpg"] = _jpeg(photos_dir, 0)
    server.routes["/geophotos/00/00/12_b.jpg"] = _jpeg(photos_dir, 1)
    server.routes["/geophotos/00/00/14_d.jpg"] = b"<html>rate limited</html>"
    server.routes["/geophotos/00/00/15_e.jpg"] = _jpeg(photos_dir, 2)


def _son_cli(server: Server, root: Path) -> list[str]:
    return ["data", "download", "scenicornot", "--root", str(root), "--base-url", f"{server.url}/data",
            "--rate", "200", "--quiet"]


def test_scenicornot_download_is_rate_limited_resumable_and_loads(
    server: Server, photos_dir: Path, tmp_path: Path
) -> None:
    from siam.data.scenic_or_not import ScenicOrNot

    _son_routes(server, photos_dir)
    root = tmp_path / "son"
    base = _son_cli(server, root)
    assert main([*base, "--limit", "2"]) == 0
    # historical votes.tsv: named by ID (the loader's key), not by the photo number in the URI
    assert sorted(p.name for p in (root / "images").iterdir()) == ["11.jpg", "12.jpg"]
    assert (root / "images" / "11.jpg").read_bytes() == server.routes["/geophotos/00/00/11_a.jpg"]
    assert main(base) == 1  # rows 13 and 14 cannot be fetched: reported, not fatal
    missing = (root / "missing.tsv").read_text()
    assert "images/13.jpg" in missing and "no photo found" in missing
    assert "images/14.jpg" in missing and "geophotos/00/00/14_d.jpg" in missing  # decoded, rejected
    assert sorted(p.name for p in (root / "images").iterdir()) == ["11.jpg", "12.jpg", "15.jpg"]
    assert [p for p, _ in server.log].count("/photo/107") == 1  # complete files are skipped on rerun
    assert [p for p, _ in server.log].count("/data/votes.tsv") == 1
    manifest = _manifest(root)
    assert manifest["images/15.jpg"]["sha256"] == hashlib.sha256(server.routes["/geophotos/00/00/15_e.jpg"]).hexdigest()
    assert manifest["images/11.jpg"]["page"] == f"{server.url}/photo/107"
    with pytest.warns(UserWarning, match="missing"):
        dataset = ScenicOrNot(root, split="all", max_missing_fraction=0.5)
    assert dataset.ids == ["11", "12", "15"] and dataset.missing == ["13", "14"]
    assert dataset.scores.tolist() == pytest.approx([4.5, 5.5, 8.5])  # each ID's own Average


def test_scenicornot_current_export_is_saved_by_photo_number(
    server: Server, photos_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder filled from the historical votes.tsv, then the current export: the loader refuses the
    old names, and a rerun refetches every file whose name now means another photo."""
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.errors import DatasetError

    _son_routes(server, photos_dir)
    root = tmp_path / "son"
    base = _son_cli(server, root)
    assert main(base) == 1
    assert "historical format: photos are saved as images/<ID>.jpg" in capsys.readouterr().out
    server.routes["/data/votes.tsv"] = _son_votes(server.url, historical=False)
    (root / "votes.tsv").unlink()  # how a newer export is fetched
    assert main([*base, "--votes-only"]) == 0
    out = capsys.readouterr().out
    assert "current format: photos are saved as images/<photo number>.jpg" in out and "not the paper's" in out
    # 11.jpg and 12.jpg hold the photos of IDs 11 and 12 (photos 107 and 11), not photos 11 and 12
    with pytest.raises(DatasetError, match=r"named for another votes.tsv format.*11\.jpg is Geograph photo 107"):
        ScenicOrNot(root, split="all", max_missing_fraction=1.0)
    assert main(base) == 1  # photos 313 and 12 (ID 14's page) still cannot be fetched
    assert "2 photos saved earlier under a name" in capsys.readouterr().out
    assert not (root / "images" / "12.jpg").exists()  # photo 11's file, not photo 12: deleted, refetch failed
    assert (root / "images" / "11.jpg").read_bytes() == server.routes["/geophotos/00/00/12_b.jpg"]
    assert (root / "images" / "107.jpg").read_bytes() == server.routes["/geophotos/00/00/11_a.jpg"]
    with pytest.warns(UserWarning, match="missing"):
        dataset = ScenicOrNot(root, split="all", max_missing_fraction=0.5)
    assert dataset.ids == ["11", "107", "509"] and dataset.missing == ["12", "313"]
    assert dataset.scores.tolist() == pytest.approx([5.5, 4.5, 8.5])  # by photo: 11 was ID 12's row


def test_rate_limiter_spaces_requests() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(dt: float) -> None:
        slept.append(dt)
        now[0] += dt

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert slept == [0.5, 0.5, 0.5] and now[0] == pytest.approx(1.5)


def test_cli_rejects_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "download", "scenicornot", "--root", str(tmp_path), "--base-url", "ftp://x/"]) == 2
    assert "only http:// and https:// URLs are allowed, got 'ftp://x/'" in capsys.readouterr().err
    assert main(["data", "download", "sun-attributes", "--root", str(tmp_path), "--sha256", "x=12"]) == 2
    assert "--sha256 expects NAME=<64 hex digits>, got 'x=12'" in capsys.readouterr().err
    assert main(["data", "download", "scenicornot", "--root", str(tmp_path), "--rate", "-1"]) == 2
    assert "--rate must be >= 0" in capsys.readouterr().err
