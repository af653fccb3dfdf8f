"""``siam serve``: arguments, one-line errors, a real server from the command line, no training code."""

from __future__ import annotations

import json
import select
import socket
import urllib.request

import pytest

from siam.cli import build_parser, main
from siam.serve.cli import _is_loopback

from .conftest import LIVE_UPLOAD_MB, post_multipart


def test_defaults_bind_loopback_port_8000():
    args = build_parser("serve").parse_args(["serve", "--checkpoint", "m.safetensors"])
    assert args.host == "127.0.0.1" and args.port == 8000
    assert args.max_upload_mb == 20 and args.max_concurrency >= 1 and args.max_megapixels > 0


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--port", "70000"], "integer in 0..65535"),
        (["--max-upload-mb", "-3"], "positive number"),
        (["--max-concurrency", "0"], "integer in 1..1024"),
        (["--log-level", "loud"], "invalid choice"),
    ],
)
def test_bad_flags_are_rejected(capsys, flags, needle):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--checkpoint", "m.safetensors", *flags])
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_checkpoint_is_one_line_exit_2(capsys, tmp_path):
    code = main(["serve", "--checkpoint", str(tmp_path / "nope.safetensors")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("siam serve: error:") and "not found" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "host", "warned"),
    [([], "127.0.0.1", False), (["--host", "0.0.0.0", "--port", "9001"], "0.0.0.0", True)],
)
def test_binds_loopback_unless_told_and_warns_otherwise(monkeypatch, capsys, tiny_checkpoint, flags, host, warned):
    import uvicorn

    calls: list[tuple[object, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert main(["serve", "--checkpoint", str(tiny_checkpoint), "--max-concurrency", "3", *flags]) == 0
    (app, kwargs), = calls
    assert kwargs["host"] == host and kwargs["server_header"] is False
    assert app.state.service.slots.size == 3  # the flags reach create_app
    err = capsys.readouterr().err
    assert ("reachable from other machines" in err) is warned
    assert f"http://{host}:{kwargs['port']}/" in err


def test_loopback_detection():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.2") and not _is_loopback("example")


def test_siam_serve_from_the_command_line_serves_page_and_api(live_server):
    with urllib.request.urlopen(f"{live_server.url}/", timeout=10) as r:
        assert b"siam explorer" in r.read()
        assert "server" not in {k.lower() for k in r.headers}  # no server banner
    with urllib.request.urlopen(f"{live_server.url}/v1/model", timeout=10) as r:
        body = json.load(r)
    assert len(body["templates"]) == 6
    assert body["limits"]["max_upload_bytes"] == LIVE_UPLOAD_MB * 2**20  # --max-upload-mb was applied


def test_real_server_answers_413_to_a_chunked_upload_before_reading_it_all(live_server):
    host, port = live_server.url.removeprefix("http://").split(":")
    chunk = b"\0" * (256 * 1024)
    total_chunks = 4 * 4 * LIVE_UPLOAD_MB  # 4 chunks per MiB: 4x the limit
    head = (
        f"POST /v1/explain HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=BOUNDARY\r\n\r\n"
    ).encode()
    part = (
        b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    frame = lambda data: f"{len(data):x}\r\n".encode() + data + b"\r\n"  # noqa: E731
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + frame(part))
        for _ in range(total_chunks):
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered already
            try:
                sock.sendall(frame(chunk))
            except OSError:  # reset / broken pipe / timeout: the server stopped reading
                break
            sent += len(chunk)
        reply = b""
        try:
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        except OSError:
            pass
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"limit is 4 MiB" in reply
    assert sent < total_chunks * len(chunk), "the whole body was accepted before the 413"


def test_the_service_never_imports_training_code(live_server, photo):
    # Make the server do everything it can (lazy imports included), then read its import report.
    assert post_multipart(f"{live_server.url}/v1/explain", photo)[0] == 200
    assert post_multipart(f"{live_server.url}/v1/intervene", photo, remove=["trees"])[0] == 200
    assert post_multipart(f"{live_server.url}/v1/explain", b"not an image")[0] == 415
    imported = live_server.imported()
    # Positive control: the recorder sees the app and the lazily imported figure module.
    assert "siam.serve.app" in imported and "siam.explain.figures" in imported, imported
    assert not [m for m in imported if m == "siam.training" or m.startswith("siam.training.")]
