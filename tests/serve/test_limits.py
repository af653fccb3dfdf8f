"""Safe by default: every error code of the service, and that 413 comes before the body is read."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import httpx
import pytest
from PIL import Image

from siam.serve.limits import Slots, UploadLimitMiddleware, format_bytes

from .conftest import UPLOAD_LIMIT, build_tiny_model, jpeg_bytes, png_bytes

CHUNK = 256 * 1024
PART_HEAD = (
    b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
    b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
)


def _post(client, data: bytes, name: str = "upload.jpg", media: str = "image/jpeg"):
    return client.post("/v1/explain", files={"image": (name, data, media)})


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny IDAT (a bomb's shape)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


async def _call_asgi(app, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, bytes, int]:
    """Drive ``app`` directly; returns (status, body, number of body chunks the app pulled)."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        await asyncio.sleep(3600)  # a client that never finishes: must not be waited for
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/explain", "raw_path": b"/v1/explain", "root_path": "",
        "query_string": b"", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234),
        "headers": [(b"host", b"test"), (b"content-type", b"multipart/form-data; boundary=BOUNDARY"), *headers],
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=30)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, pulled


def test_413_by_content_length_reads_nothing(app):
    chunks = [PART_HEAD] + [b"\0" * CHUNK] * 40
    declared = str(sum(map(len, chunks))).encode()
    status, body, pulled = asyncio.run(_call_asgi(app, [(b"content-length", declared)], chunks))
    assert status == 413
    assert pulled == 0, "the body must not be read when Content-Length is over the limit"
    assert b"limit is 2 MiB" in body and declared in body


def test_413_by_content_length_through_the_client(client):
    r = client.post(
        "/v1/explain", content=b"x" * (UPLOAD_LIMIT + 1), headers={"content-type": "multipart/form-data; boundary=B"}
    )
    assert r.status_code == 413
    assert r.headers["connection"] == "close"
    assert f"Content-Length is {UPLOAD_LIMIT + 1} bytes" in r.json()["detail"]


@pytest.mark.parametrize("declared", [None, b"100"], ids=["chunked", "lying-content-length"])
def test_413_streamed_body_stops_reading_at_the_limit(app, declared):
    chunks = [PART_HEAD] + [b"\0" * CHUNK] * 40  # 10 MiB, 5x the limit
    headers = [] if declared is None else [(b"content-length", declared)]
    status, body, pulled = asyncio.run(_call_asgi(app, headers, chunks))
    assert status == 413, body
    assert pulled <= UPLOAD_LIMIT // CHUNK + 2, f"read {pulled} of {len(chunks)} chunks"
    assert b"reading stopped" in body


def test_413_chunked_upload_through_the_client(client):
    def body():  # a generator: httpx sends it chunked, without Content-Length
        yield PART_HEAD
        for _ in range(40):
            yield b"\0" * CHUNK

    r = client.post(
        "/v1/explain", content=body(), headers={"content-type": "multipart/form-data; boundary=BOUNDARY"}
    )
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "limit is 2 MiB" in detail and "reading stopped" in detail  # caught by counting bytes


def test_400_for_an_invalid_content_length(app):
    status, body, pulled = asyncio.run(_call_asgi(app, [(b"content-length", b"lots")], [b""]))
    assert status == 400 and b"Content-Length" in body and pulled == 0


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"just some text, not a photo\n", "a text file"),
        (b"GIF89a" + b"\0" * 64, "a GIF file"),
        (b"%PDF-1.7\n", "a PDF file"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a text file"),
    ],
)
def test_415_for_other_types_decided_by_magic_bytes(client, data, kind):
    r = _post(client, data, name="photo.jpg", media="image/jpeg")  # the name and media type lie
    assert r.status_code == 415
    detail = r.json()["detail"]
    assert kind in detail and "allowed: JPEG, PNG, WebP" in detail and "photo.jpg" in detail


def test_type_comes_from_magic_bytes_not_the_name(client):
    png = png_bytes(Image.new("RGB", (64, 48), (10, 120, 30)))
    r = _post(client, png, name="notes.txt", media="text/plain")
    assert r.status_code == 200, r.text
    assert r.json()["image_size"] == [64, 48]


def test_webp_is_accepted(client):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="WEBP")
    r = _post(client, buf.getvalue(), name="x.webp", media="image/webp")
    assert r.status_code == 200, r.text


def test_413_for_a_decompression_bomb_names_the_limit(client):
    bomb = _png_header_only(30_000, 30_000)  # 900 megapixels claimed in a ~100-byte file
    r = _post(client, bomb, name="bomb.png", media="image/png")
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "4 megapixels" in detail and "bomb" in detail


def test_413_for_an_image_just_above_the_megapixel_limit(client):
    big = png_bytes(Image.new("RGB", (2500, 2000), (0, 0, 0)))  # 5 MP, a few KiB compressed
    assert len(big) < UPLOAD_LIMIT
    r = _post(client, big, name="big.png", media="image/png")
    assert r.status_code == 413
    assert "2500x2000 = 5.0 megapixels" in r.json()["detail"]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p[: len(p) // 2], "truncated"),
        (lambda p: b"\xff\xd8\xff" + b"\x13" * 500, "corrupt"),
        (lambda p: b"", "empty file"),
    ],
    ids=["truncated-jpeg", "garbage-after-magic", "empty"],
)
def test_422_for_a_corrupt_image_gives_the_reason(client, make, needle):
    photo = jpeg_bytes(Image.effect_noise((256, 256), 60).convert("RGB"))
    r = _post(client, make(photo), name="broken.jpg")
    assert r.status_code == 422
    assert needle in r.json()["detail"] and "broken.jpg" in r.json()["detail"]


def test_503_with_retry_after_when_busy_and_the_slot_is_released():
    from siam.serve.app import create_app

    model = build_tiny_model()
    entered, release = threading.Event(), threading.Event()

    def hold(module, args):  # blocks the first request inside the model
        entered.set()
        release.wait(timeout=30)

    model.register_forward_pre_hook(hold)
    app = create_app(model, max_concurrency=1)
    image = jpeg_bytes(Image.new("RGB", (96, 64), (40, 90, 160)))
    files = {"image": ("a.jpg", image, "image/jpeg")}

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response, bool]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as ac:
            first = asyncio.create_task(ac.post("/v1/explain", files=files))
            for _ in range(3000):
                if entered.is_set():
                    break
                await asyncio.sleep(0.01)
            health = await ac.get("/health")  # the event loop stays responsive meanwhile
            busy = await ac.post("/v1/intervene", files=files, data={"remove": '["trees"]'})
            release.set()
            done = await first
            after = await ac.post("/v1/explain", files=files)
            return busy, done, after, health.status_code == 200

    busy, done, after, responsive = asyncio.run(scenario())
    assert responsive
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert "concurrency limit" in busy.json()["detail"]
    assert done.status_code == 200 and after.status_code == 200


def test_limit_helpers_validate_and_format():
    assert format_bytes(20 * 2**20) == "20 MiB"
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(12) == "12 bytes"
    with pytest.raises(ValueError, match="max_bytes"):
        UploadLimitMiddleware(lambda s, r, se: None, max_bytes=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        Slots(0)
    slots = Slots(2)
    assert slots.try_acquire() and slots.try_acquire() and not slots.try_acquire()
    slots.release()
    assert slots.try_acquire()
