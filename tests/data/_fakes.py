"""Builders for tiny fake datasets and bad image files, used by the data tests."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

SMALL = dict(resize=36, crop=32)  # Preprocessing sizes for fast tests


@functools.lru_cache(maxsize=4)
def real_photo(path: str) -> Image.Image:
    """A real photograph decoded once per session by ``load_image`` (do not modify it)."""
    from siam.data.images import load_image

    return load_image(path)


def rgb_array(w: int = 40, h: int = 30, seed: int = 0) -> np.ndarray:
    """A smooth random (h, w, 3) uint8 image (compresses well, survives JPEG)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
    return np.array(Image.fromarray(base).resize((w, h), Image.BILINEAR))


def encode(arr_or_im: np.ndarray | Image.Image, fmt: str, **kw: object) -> bytes:
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def raw_png(width: int, height: int, depth: int, color_type: int, rows: bytes | None) -> bytes:
    """A PNG written by hand (for 16-bit data and lying headers); ``rows`` are filtered scanlines."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows or b""))
        + png_chunk(b"IEND", b"")
    )


def png_rows(arr: np.ndarray) -> bytes:
    """Scanlines with filter byte 0 for a big-endian array of shape (h, w) or (h, w, c)."""
    return b"".join(b"\x00" + arr[r].tobytes() for r in range(arr.shape[0]))


def flip_png_crc(data: bytes, ctype: bytes = b"IDAT") -> bytes:
    """Corrupt the CRC of the first ``ctype`` chunk (the chunk data stays valid)."""
    out = bytearray(data)
    off = 8
    while off < len(out):
        (n,) = struct.unpack_from(">I", out, off)
        if bytes(out[off + 4 : off + 8]) == ctype:
            out[off + 8 + n] ^= 0xFF
            return bytes(out)
        off += 12 + n
    raise ValueError(f"no {ctype!r} chunk")


def bad_files() -> dict[str, bytes]:
    """One file content per bad-image kind of issue 3 (all would be named ``.jpg``)."""
    jpeg = encode(rgb_array(seed=1), "JPEG", quality=90)
    png = encode(rgb_array(seed=2), "PNG")
    return {
        "truncated": jpeg[: len(jpeg) // 2],
        "zero_bytes": b"",
        "text": b"this is not an image, just text named .jpg\n",
        "bad_png_crc": flip_png_crc(png),
    }


def write_images(folder: Path, names: Sequence[str], *, size: tuple[int, int] = (40, 30)) -> None:
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(rgb_array(*size, seed=k), "JPEG", quality=90))


def cell(strings: Sequence[str]) -> np.ndarray:
    """A MATLAB N x 1 cell array of strings for scipy.io.savemat."""
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = s
    return out


def write_sun(
    root: Path,
    *,
    names: Sequence[str],
    labels: np.ndarray,
    image_names: Sequence[str] | None = None,
    images: bool = True,
    sets: np.ndarray | None = None,
    char_matrix: bool = False,
) -> list[str]:
    """A SUN Attributes folder; returns the image names."""
    root.mkdir(parents=True, exist_ok=True)
    n = labels.shape[0]
    if image_names is None:
        image_names = [f"{'abc'[i % 3]}/cat{i % 3}/sun_{i:05d}.jpg" for i in range(n)]
    attr = np.array(list(names)) if char_matrix else cell(names)
    scipy.io.savemat(root / "attributes.mat", {"attributes": attr})
    scipy.io.savemat(root / "attributeLabels_continuous.mat", {"labels_cv": labels})
    scipy.io.savemat(root / "images.mat", {"images": cell(image_names)})
    if sets is not None:
        scipy.io.savemat(root / "trainval_idx.mat", {"sets": sets.reshape(-1, 1).astype(np.uint8)})
    if images:
        write_images(root / "images", image_names)
    return list(image_names)
