"""Fixtures for scoring tests: tiny checkpoints and a folder of small real photos plus bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import siam
from siam.data.transforms import Preprocessing

ATTRIBUTES = ["trees", "water", "road", "snow"]
BAD_FILES = {"sub/empty.jpg", "sub/text.jpg", "sub/truncated.jpg"}


def make_tiny_siam(*, seed: int = 0, crop: int = 128, targets: tuple[str, ...] = ("score",)) -> siam.SIAM:
    """A tiny SIAM whose maps, templates, mixing and bias are non-trivial (scores differ per image);
    with several ``targets`` each has its own random templates and bias 5, 3, 1, ..."""
    torch.manual_seed(seed)
    model = siam.build_model(backbone="tiny", attributes=ATTRIBUTES, grid=8, border=0, targets=targets,
                             preprocessing=Preprocessing(resize=crop, crop=crop))
    with torch.no_grad():
        model.attribute_head.conv.weight.uniform_(-0.02, 0.06)  # maps clearly above zero
        model.attribute_head.conv.bias.fill_(0.05)
        model.template_head.templates.uniform_(0.0, 0.2)
        model.template_head.mixing.uniform_(-1.0, 1.0)
    model.set_bias(5.0 if len(targets) == 1 else [5.0 - 2.0 * t for t in range(len(targets))])
    return model


@pytest.fixture(scope="session")
def siam_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return siam.save_checkpoint(make_tiny_siam(), tmp_path_factory.mktemp("ckpt") / "siam.safetensors")


@pytest.fixture(scope="session")
def baseline_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    model = siam.build_baseline(backbone="tiny", bias=4.0, preprocessing=Preprocessing(resize=128, crop=128))
    return siam.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "baseline.safetensors")


def _small_copy(src: Path, dest: Path, side: int = 160) -> None:
    with Image.open(src) as im:
        im.draft("RGB", (side * 2, side * 2))  # fast JPEG DCT downscale; no-op for PNG
        im = im.convert("RGB")
        im.thumbnail((side, side))
        im.save(dest)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    """Downscaled copies of the shared photos (JPEG, PNG, WebP, nested, upper-case extension)
    plus three bad files (zero bytes, text named .jpg, truncated JPEG) and one non-image."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    photos = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert len(photos) >= 6, f"expected the shared photos in {photos_dir}"
    for i, src in enumerate(photos):
        ext = [".jpg", ".png", ".webp", ".JPG"][i % 4]
        folder = root if i % 2 == 0 else root / "sub"
        _small_copy(src, folder / f"{src.stem}{ext}")
    (root / "sub" / "empty.jpg").write_bytes(b"")
    (root / "sub" / "text.jpg").write_text("this is not an image\n")
    good = (root / f"{photos[0].stem}.jpg").read_bytes()
    (root / "sub" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("ignored: not an image extension\n")
    return root
