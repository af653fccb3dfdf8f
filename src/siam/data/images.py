"""Safe decoding of untrusted image files (Pillow only; JPEG, PNG, WebP).

:func:`load_image` returns an RGB ``PIL.Image`` or raises :class:`~siam.errors.ImageDecodeError`
naming the file and the reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from siam.errors import ImageDecodeError

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_MEGAPIXELS: float = 100.0
BACKGROUND: tuple[int, int, int] = (255, 255, 255)

__all__ = ["load_image", "decode_image", "ALLOWED_FORMATS", "DEFAULT_MAX_MEGAPIXELS"]


def decode_image(
    data: bytes | os.PathLike[str] | str,
    *,
    name: str | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> Image.Image:
    """Decode bytes or a file to an RGB image.

    Checks, in order: the format (from the file's magic bytes, not its name) is one of
    :data:`ALLOWED_FORMATS`; width x height <= ``max_megapixels`` (before any pixel is decoded);
    the pixels decode completely. Then applies EXIF orientation and converts any mode
    (L, P, CMYK, RGBA composited on white, I;16, ...) to 8-bit RGB.
    """
    label = name if name is not None else (str(data) if not isinstance(data, bytes) else "<bytes>")
    try:
        if isinstance(data, bytes):
            if not data:
                raise ImageDecodeError(label, "empty file (0 bytes)")
            src: io.BytesIO | str = io.BytesIO(data)
        else:
            p = Path(data)
            if not p.is_file():
                raise ImageDecodeError(label, "file not found")
            if p.stat().st_size == 0:
                raise ImageDecodeError(label, "empty file (0 bytes)")
            src = str(p)
        with Image.open(src, formats=list(ALLOWED_FORMATS)) as im:
            w, h = im.size
            if w * h > max_megapixels * 1e6:
                raise ImageDecodeError(
                    label,
                    f"image is {w}x{h} = {w * h / 1e6:.1f} megapixels, above the limit of "
                    f"{max_megapixels:g} megapixels (decompression-bomb guard)",
                )
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            label, f"not a recognised image; allowed formats: {', '.join(ALLOWED_FORMATS)}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(label, f"decompression bomb rejected ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(label, f"corrupt or truncated image ({exc})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        arr8 = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype("uint8")
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, BACKGROUND)
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return im.convert("RGB")


def load_image(path: str | os.PathLike[str], *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> Image.Image:
    """Load ``path`` as an RGB image; see :func:`decode_image`."""
    return decode_image(Path(path), name=str(path), max_megapixels=max_megapixels)
