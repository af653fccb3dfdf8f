"""Safe decoding of untrusted image files (Pillow only; JPEG, PNG, WebP).

:func:`load_image` / :func:`decode_image` return an 8-bit RGB ``PIL.Image`` or raise
:class:`~siam.errors.ImageDecodeError` whose message names the file and the reason.

Checks, in order:

1. the file exists and is not empty;
2. the format, from the magic bytes (never the file name), is JPEG, PNG or WebP;
3. container integrity that Pillow does not check: every PNG chunk's CRC (Pillow ignores the CRC of
   ``IDAT`` and ``IEND``) and the presence of ``IEND``, and the RIFF length of a WebP;
4. width x height <= ``max_megapixels``, read from the header before any pixel is decoded
   (Pillow's own guard, ``2 * PIL.Image.MAX_IMAGE_PIXELS``, also applies);
5. the pixels decode completely: truncated files are rejected even when some other code has set
   ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` (it is switched off, under a lock, while we decode);
6. optionally (``min_size``), a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale while both
   sides stay >= ``min_size``: several times faster for photos much larger than the model input,
   with pixels close to (not identical with) a full decode followed by downsampling;
7. EXIF orientation is applied, then any mode becomes RGB: L, 1, P, CMYK, YCbCr via Pillow;
   RGBA / LA / PA / P with transparency composited onto :data:`BACKGROUND`; 16-bit grayscale
   (``I;16``, ``I``) scaled from [0, 65535] to [0, 255] (16-bit RGB(A) PNGs are reduced to 8 bits by
   Pillow itself). ICC profiles are not applied.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from siam.errors import ImageDecodeError

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_MEGAPIXELS: float = 100.0
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

__all__ = [
    "load_image",
    "decode_image",
    "sniff_format",
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_MEGAPIXELS",
    "BACKGROUND",
]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Formats we recognise only to name them in the error message.
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip archive"),
)
# Pillow's truncation switch is a module global; we force it off while decoding.
_STRICT_LOCK = threading.Lock()
# Errors Pillow documents (or is known) to raise on malformed input.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, struct.error)


def sniff_format(head: bytes) -> str | None:
    """The format named by the first bytes (>= 12): ``"JPEG"``, ``"PNG"``, ``"WEBP"`` or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(_PNG_MAGIC):
        return "PNG"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_unknown(head: bytes) -> str:
    """Say what a file that is not JPEG/PNG/WebP looks like."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        return f"an ISO media file (HEIC/AVIF/MP4, brand {brand!r})"
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return f"a {name} file"
    sample = head[:64]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return f"unknown binary data (first bytes {head[:8]!r})"
    if text and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return f"a text file (starts with {text[:32]!r})"
    return f"unknown data (first bytes {head[:8]!r})"


def _check_png_chunks(data: bytes) -> str | None:
    """Walk the PNG chunks; return a reason if a CRC is wrong or the file is cut short."""
    view = memoryview(data)
    off, n = len(_PNG_MAGIC), len(data)
    while True:
        if off + 8 > n:
            return "truncated PNG (ends before the IEND chunk)"
        (length,) = struct.unpack_from(">I", data, off)
        ctype = data[off + 4 : off + 8]
        end = off + 12 + length
        if end > n:
            return f"truncated PNG (chunk {ctype!r} needs {length} bytes, the file ends first)"
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[off + 4 : end - 4]) != crc:
            return f"bad CRC in PNG chunk {ctype.decode('latin-1')!r} at byte {off} (corrupt file)"
        if ctype == b"IEND":
            return None
        off = end


def _check_webp_container(data: bytes) -> str | None:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data):
        return f"truncated WebP (RIFF header says {riff_size + 8} bytes, the file has {len(data)})"
    return None


def _load_strict(im: Image.Image) -> None:
    """``im.load()`` with truncated files rejected whatever ``LOAD_TRUNCATED_IMAGES`` says."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        im.load()
        return
    with _STRICT_LOCK:
        saved = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _read(data: bytes | os.PathLike[str] | str, label: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    p = Path(data)
    try:
        with open(p, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(label, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageDecodeError(label, f"cannot read file ({exc.strerror or exc})") from None


def decode_image(
    data: bytes | os.PathLike[str] | str,
    *,
    name: str | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    min_size: int | None = None,
) -> Image.Image:
    """Decode bytes or a file to an 8-bit RGB image (see the module docstring for the checks).

    ``name`` labels the error messages (default: the path, or ``"<bytes>"``). ``min_size``: allow
    reduced-scale JPEG decoding down to this many pixels per side (None: full resolution). Raises
    :class:`~siam.errors.ImageDecodeError` for anything that is not a complete JPEG/PNG/WebP within
    ``max_megapixels``.
    """
    if not max_megapixels > 0:
        raise ValueError(f"max_megapixels must be > 0, got {max_megapixels!r}")
    if min_size is not None and (not isinstance(min_size, int) or min_size < 1):
        raise ValueError(f"min_size must be a positive integer or None, got {min_size!r}")
    if name is not None:
        label = name
    elif isinstance(data, (bytes, bytearray, memoryview)):
        label = "<bytes>"
    else:
        label = str(data)
    raw = _read(data, label)
    if not raw:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    fmt = sniff_format(raw[:16])
    if fmt is None:
        raise ImageDecodeError(
            label, f"not a JPEG, PNG or WebP image: looks like {_describe_unknown(raw[:64])}"
        )
    reason = _check_png_chunks(raw) if fmt == "PNG" else None
    if fmt == "WEBP":
        reason = _check_webp_container(raw)
    if reason is not None:
        raise ImageDecodeError(label, reason)
    try:
        im = Image.open(io.BytesIO(raw), formats=[fmt])
        w, h = im.size
        if w * h > max_megapixels * 1e6:
            raise ImageDecodeError(
                label,
                f"image is {w}x{h} = {w * h / 1e6:.1f} megapixels, above the limit of "
                f"{max_megapixels:g} megapixels (decompression-bomb guard)",
            )
        if min_size is not None and fmt == "JPEG":
            im.draft(None, (min_size, min_size))
        _load_strict(im)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(label, f"decompression bomb rejected by Pillow ({exc})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(
            label, f"truncated or corrupt {fmt} header (Pillow cannot identify it)"
        ) from None
    except _DECODE_ERRORS as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageDecodeError(label, f"{kind} {fmt} data ({exc})") from None
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(label, f"unreadable EXIF orientation ({exc})") from None
    try:
        return _to_rgb(im)
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(label, f"cannot convert pixel mode {im.mode} to RGB ({exc})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited onto :data:`BACKGROUND`."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: full range [0, 65535] -> [0, 255], rounded.
        arr = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        arr8 = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")  # (H, W) uint8 -> L -> RGB
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, BACKGROUND)
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def load_image(
    path: str | os.PathLike[str],
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    min_size: int | None = None,
) -> Image.Image:
    """Load ``path`` as an 8-bit RGB image; see :func:`decode_image`."""
    return decode_image(Path(path), name=str(path), max_megapixels=max_megapixels, min_size=min_size)
