"""Fixtures for the service tests: a tiny SIAM checkpoint with hand-set templates, the app, photos."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

import siam
from siam.data.transforms import Preprocessing

ATTRIBUTES = ("trees", "water", "road", "ice_snow", "clouds", "buildings")
BIAS = 5.0
UPLOAD_LIMIT = 2 * 2**20  # small, so the 413 tests stay cheap


TARGETS = ("beauty", "safety")
BIASES = (BIAS, 2.0)


def build_tiny_model(seed: int = 0, *, targets: tuple[str, ...] = ("score",)) -> siam.SIAM:
    """Tiny backbone at 128 px, 8x8 maps, templates set so that contributions have both signs;
    with two ``targets`` the second has the opposite signs (odd attributes raise it) and bias 2."""
    torch.manual_seed(seed)
    model = siam.build_model(
        backbone="tiny",
        attributes=ATTRIBUTES,
        grid=8,
        border=0,
        bias=BIAS if len(targets) == 1 else list(BIASES[: len(targets)]),
        targets=targets,
        preprocessing=Preprocessing(resize=128, crop=128),
    )
    with torch.no_grad():
        # Maps > 0 everywhere (positive 1x1-conv bias), so every attribute contributes.
        model.attribute_head.conv.bias.fill_(0.5)
        # Mixing is (+0.5, -0.5): E_i = w_i (T_i1 - T_i2) / 2. Even attributes get a larger first
        # template (they raise the score), odd ones a larger second template (they lower it).
        t = model.template_head.templates  # (T, K, 2, m, m)
        t.uniform_(0.0, 1.0)
        t[0::2, 0::2, 0] += 1.0
        t[0::2, 1::2, 1] += 1.0
        t[1::2, 0::2, 1] += 1.0  # a second target: the other way round
        t[1::2, 1::2, 0] += 1.0
        model.template_head.weight.fill_(0.1)
    return model.eval()


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-model") / "tiny.safetensors"
    siam.save_checkpoint(build_tiny_model(), path)
    return path


@pytest.fixture(scope="session")
def two_target_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-model2") / "tiny2.safetensors"
    siam.save_checkpoint(build_tiny_model(targets=TARGETS), path)
    return path


@pytest.fixture(scope="session")
def client2(two_target_checkpoint: Path):
    from fastapi.testclient import TestClient

    from siam.serve.app import create_app

    with TestClient(create_app(two_target_checkpoint, max_upload_bytes=UPLOAD_LIMIT, max_megapixels=4.0)) as c:
        yield c


@pytest.fixture(scope="session")
def app(tiny_checkpoint: Path):
    from siam.serve.app import create_app

    return create_app(tiny_checkpoint, max_upload_bytes=UPLOAD_LIMIT, max_concurrency=2, max_megapixels=4.0)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def photo_path(photos_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo from ../shared, downscaled to 320 px wide (JPEG) in a temporary folder."""
    src = photos_dir / "greenmeadow.jpg"
    if not src.is_file():
        pytest.skip(f"shared photo missing: {src}")
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((320, 320))
        out = tmp_path_factory.mktemp("serve-photos") / "greenmeadow_small.jpg"
        im.save(out, format="JPEG", quality=90)
    return out


@pytest.fixture(scope="session")
def photo(photo_path: Path) -> bytes:
    return photo_path.read_bytes()


LIVE_UPLOAD_MB = 4

# Runs `siam serve ARGS` through the subcommand's own add_arguments/run (what siam.cli.main
# dispatches to) with an import recorder: every module under `siam` the server process imports is
# appended to a report file, so a test can check that serving never imports siam.training, even
# lazily while answering requests. (siam.cli itself is bypassed: its command table looks up every
# subcommand's module with find_spec, which imports their parent packages.)
_SERVE_WITH_IMPORT_REPORT = """
import argparse, importlib.abc, sys
REPORT = sys.argv.pop(1)

class _Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "siam" or name.startswith("siam."):
            with open(REPORT, "a") as fh:
                fh.write(name + "\\n")
        return None

sys.meta_path.insert(0, _Recorder())
from siam.serve import cli
parser = argparse.ArgumentParser(prog="siam serve")
cli.add_arguments(parser)
sys.exit(cli.run(parser.parse_args(sys.argv[1:])))
"""


@dataclass(frozen=True)
class LiveServer:
    url: str
    imports_report: Path

    def imported(self) -> list[str]:
        """Modules under ``siam`` the server process has imported so far."""
        return self.imports_report.read_text().split() if self.imports_report.exists() else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_multipart(url: str, image: bytes, name: str = "photo.jpg", **fields: object) -> tuple[int, dict]:
    """POST ``image`` and JSON-encoded ``fields`` as multipart/form-data with the standard library."""
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + image
    for key, value in fields.items():
        text = value if isinstance(value, str) else json.dumps(value)
        body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{text}'.encode()
    body += f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@contextlib.contextmanager
def _serve(checkpoint: Path, report: Path):
    """``siam serve`` in a fresh interpreter on 127.0.0.1 and a free port (imports recorded in ``report``)."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    port = _free_port()
    cmd = [
        sys.executable, "-c", _SERVE_WITH_IMPORT_REPORT, str(report),
        "--checkpoint", str(checkpoint), "--port", str(port),
        "--max-upload-mb", str(LIVE_UPLOAD_MB), "--log-level", "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"siam serve exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    assert json.load(r)["status"] == "ok"
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("siam serve did not answer /health within 90 s")
                time.sleep(0.2)
        yield LiveServer(base, report)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """``siam serve`` in a fresh interpreter on 127.0.0.1 and a free port."""
    with _serve(tiny_checkpoint, tmp_path_factory.mktemp("serve-live") / "imports.txt") as server:
        yield server


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, recorded as trained on a `siam synth` world."""
    from siam.provenance import trained_on_record

    world = tmp_path_factory.mktemp("synth-world")
    (world / "truth").mkdir()
    (world / "truth" / "meta.json").write_text(json.dumps({"generator": "siam synth", "seed": 0}))
    path = world.parent / f"{world.name}-model.safetensors"
    siam.save_checkpoint(build_tiny_model(), path, trained_on=trained_on_record("sun", {"sun": world / "sun"}))
    return path


@pytest.fixture()
def synthetic_live_server(synthetic_checkpoint: Path, tmp_path: Path):
    """``siam serve`` with a model trained on synthetic scenes."""
    with _serve(synthetic_checkpoint, tmp_path / "imports.txt") as server:
        yield server


@pytest.fixture()
def two_target_live_server(two_target_checkpoint: Path, tmp_path: Path):
    """``siam serve`` with a two-target model (``TARGETS``)."""
    with _serve(two_target_checkpoint, tmp_path / "imports.txt") as server:
        yield server
