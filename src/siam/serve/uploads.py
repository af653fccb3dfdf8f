"""Turning an untrusted upload into an RGB image, with the HTTP status for each failure.

* the type comes from the magic bytes (never the file name or the declared content type):
  JPEG, PNG or WebP, else ``415``;
* width x height is read from the header before any pixel is decoded: above the megapixel
  limit (a decompression bomb) gives ``413`` naming the limit;
* the pixels are decoded by :func:`siam.data.images.decode_image`; a corrupt or truncated file
  gives ``422`` with the reason.
"""

from __future__ import annotations

import io
import unicodedata

from PIL import Image

from siam.data.images import decode_image, sniff_format
from siam.errors import ImageDecodeError

__all__ = ["UploadError", "decode_upload", "safe_name", "ALLOWED_LABEL"]

ALLOWED_LABEL = "JPEG, PNG, WebP"


class UploadError(Exception):
    """An upload that cannot be explained; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def safe_name(filename: str | None, *, default: str = "upload") -> str:
    """A display label for an uploaded file: base name only, no control characters, <= 120 chars.

    Never used as a path.
    """
    if not filename:
        return default
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return clean[:120] or default


def decode_upload(data: bytes, *, name: str, max_megapixels: float) -> Image.Image:
    """Validate and decode ``data``; raise :class:`UploadError` (415, 413 or 422) if it fails."""
    if not data:
        raise UploadError(422, f"{name}: empty file (0 bytes); send a {ALLOWED_LABEL} image")
    kind = sniff_format(data[:16])
    if kind is None:
        try:  # decode_image rejects it too, and says what the first bytes look like
            decode_image(data[:64], name=name)
        except ImageDecodeError as exc:
            reason = exc.reason
        else:  # pragma: no cover - sniff_format and decode_image agree on the formats
            reason = "unrecognised format"
        raise UploadError(
            415, f"{name}: unsupported file type: {reason} (decided from its first bytes); allowed: {ALLOWED_LABEL}"
        )
    limit = f"the limit is {max_megapixels:g} megapixels (decompression-bomb guard)"
    try:
        with Image.open(io.BytesIO(data), formats=[kind]) as im:
            w, h = im.size  # header only; no pixels decoded yet
    except Image.DecompressionBombError as exc:
        raise UploadError(413, f"{name}: image too large ({exc}); {limit}") from None
    except Exception as exc:  # noqa: BLE001 - any header failure means a corrupt file
        raise UploadError(422, f"{name}: corrupt {kind} header ({exc})") from None
    if w * h > max_megapixels * 1e6:
        raise UploadError(
            413, f"{name}: image is {w}x{h} = {w * h / 1e6:.1f} megapixels; {limit}"
        )
    try:
        return decode_image(data, name=name, max_megapixels=max_megapixels)
    except ImageDecodeError as exc:
        raise UploadError(422, f"{name}: {exc.reason}") from None
