from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from siam.data.images import BACKGROUND, decode_image, load_image, sniff_format
from siam.errors import ImageDecodeError
from tests.data._fakes import bad_files, encode, flip_png_crc, png_rows, raw_png, real_photo, rgb_array

PHOTOS = ["path.jpg", "storm.jpg", "altai_portrait.png"]


def _reason(exc: pytest.ExceptionInfo[ImageDecodeError]) -> str:
    return exc.value.reason.lower()


# --- real photographs ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTOS)
def test_real_photos_decode_to_rgb_with_their_size(photos_dir: Path, name: str) -> None:
    path = photos_dir / name
    with Image.open(path) as ref:
        size = ref.size
        ref_rgb = np.asarray(ref.convert("RGB"))
    im = real_photo(str(path))
    assert im.mode == "RGB"
    assert im.size == size  # these photos carry no rotating EXIF orientation
    np.testing.assert_array_equal(np.asarray(im), ref_rgb)


def test_rgba_photo_is_composited_onto_the_background(photos_dir: Path, tmp_path: Path) -> None:
    # icecold is a 5120x2880 RGBA PNG (opaque); make its left half transparent.
    big = real_photo(str(photos_dir / "icecold_5120x2880.png"))
    assert big.mode == "RGB" and big.size == (5120, 2880)
    small = big.reduce(8)  # 640x360
    arr = np.asarray(small.convert("RGBA")).copy()
    arr[:, :320, 3] = 0
    path = tmp_path / "half.png"
    path.write_bytes(encode(Image.fromarray(arr, "RGBA"), "PNG"))
    out = np.asarray(load_image(path))
    assert (out[:, :320] == BACKGROUND).all()
    np.testing.assert_array_equal(out[:, 320:], arr[:, 320:, :3])


def test_format_comes_from_magic_bytes_not_the_name(photos_dir: Path, tmp_path: Path) -> None:
    png_named_jpg = tmp_path / "really_png.jpg"
    png_named_jpg.write_bytes(encode(rgb_array(), "PNG"))
    jpg_named_png = tmp_path / "really_jpeg.png"
    shutil.copy(photos_dir / "storm.jpg", jpg_named_png)
    np.testing.assert_array_equal(np.asarray(load_image(png_named_jpg)), rgb_array())
    assert load_image(jpg_named_png).size == (1920, 1280)
    assert sniff_format(encode(rgb_array(), "WEBP")[:16]) == "WEBP"


def test_webp_decodes(tmp_path: Path) -> None:
    path = tmp_path / "a.webp"
    path.write_bytes(encode(rgb_array(), "WEBP", lossless=True))
    np.testing.assert_array_equal(np.asarray(load_image(path)), rgb_array())


# --- bad files -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "truncated"),
        ("zero_bytes", "empty file"),
        ("text", "text file"),
        ("bad_png_crc", "bad crc"),
    ],
)
def test_each_bad_kind_raises_naming_file_and_reason(tmp_path: Path, kind: str, expected: str) -> None:
    path = tmp_path / f"{kind}.jpg"
    path.write_bytes(bad_files()[kind])
    with pytest.raises(ImageDecodeError) as exc:
        load_image(path)
    assert exc.value.path == str(path)
    assert str(path) in str(exc.value)
    assert expected in _reason(exc)


@pytest.mark.parametrize("cut", [-1, -2, -40, 0.5, 0.1])
@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_rejected_even_with_pillows_lenient_flag(
    monkeypatch: pytest.MonkeyPatch, cut: float, progressive: bool
) -> None:
    data = encode(rgb_array(80, 64, seed=3), "JPEG", quality=95, progressive=progressive)
    end = int(len(data) * cut) if isinstance(cut, float) else len(data) + cut
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data[:end], name="cut.jpg")
    assert "truncated" in _reason(exc)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


@pytest.mark.parametrize("cut", [-1, -12, -20, 0.5])
def test_truncated_png_rejected(cut: float) -> None:
    # Pillow alone decodes a PNG cut inside its last chunks without complaint.
    data = encode(rgb_array(80, 64), "PNG")
    end = int(len(data) * cut) if isinstance(cut, float) else len(data) + cut
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data[:end], name="cut.png")
    assert "truncated png" in _reason(exc)


@pytest.mark.parametrize("chunk", [b"IHDR", b"IDAT", b"IEND"])
def test_png_with_a_bad_crc_in_any_chunk_is_rejected(chunk: bytes) -> None:
    data = flip_png_crc(encode(rgb_array(), "PNG"), chunk)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data, name="crc.png")
    assert "bad crc" in _reason(exc)
    assert chunk.decode() in exc.value.reason


def test_truncated_webp_rejected() -> None:
    data = encode(rgb_array(), "WEBP", quality=80)
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(data[:-10], name="cut.webp")
    assert "truncated webp" in _reason(exc)


@pytest.mark.parametrize(("fmt", "label"), [("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")])
def test_other_formats_are_refused_by_name(fmt: str, label: str) -> None:
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(encode(rgb_array(), fmt), name=f"x.{label}")
    assert f"a {label} file" in _reason(exc)
    assert "jpeg, png or webp" in _reason(exc)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(tmp_path)


def test_bytes_are_labelled_with_the_given_name() -> None:
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(b"", name="upload.jpg")
    assert str(exc.value).startswith("upload.jpg: ")
    with pytest.raises(ImageDecodeError) as exc:
        decode_image(b"\x00\x01garbage")
    assert exc.value.path == "<bytes>"
    with pytest.raises(ValueError, match="max_megapixels"):
        decode_image(encode(rgb_array(), "PNG"), max_megapixels=0)


# --- decompression bombs -------------------------------------------------------------------------

def test_bomb_rejected_from_the_header_before_decoding() -> None:
    # 12000 x 10000 = 120 MP claimed, with no pixel data at all: only a header check can name the
    # size; decoding would fail differently (and allocate 360 MB first).
    data = raw_png(12000, 10000, 8, 2, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageDecodeError) as exc:
            decode_image(data, name="bomb.png", max_megapixels=100)
    assert "12000x10000 = 120.0 megapixels" in exc.value.reason
    assert "limit of 100 megapixels" in exc.value.reason


def test_megapixel_cap_is_configurable(photos_dir: Path) -> None:
    path = photos_dir / "storm.jpg"  # 1920 x 1280 = 2.46 MP
    with pytest.raises(ImageDecodeError, match="above the limit of 2 megapixels"):
        load_image(path, max_megapixels=2)
    assert load_image(path, max_megapixels=2.5).size == (1920, 1280)


def test_pillow_guard_also_applies_to_huge_headers() -> None:
    data = raw_png(20000, 20000, 8, 2, None)  # 400 MP > 2 x PIL.Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError, match="decompression bomb|megapixels"):
        decode_image(data, max_megapixels=1000)


# --- orientation and colour modes ----------------------------------------------------------------

def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:20, :30] = (255, 0, 0)  # red top-left quarter as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(arr, "JPEG", quality=98, exif=exif.tobytes()))
    im = load_image(path)
    assert im.size == (40, 60)  # (width, height) swapped
    out = np.asarray(im).astype(int)
    assert out[5, 35, 0] > 200 and out[5, 35, 1] < 60  # red is now top-right
    assert out[5, 5].sum() < 60 and out[55, 35].sum() < 60


def _decode(im: Image.Image, fmt: str = "PNG", **kw: object) -> np.ndarray:
    return np.asarray(decode_image(encode(im, fmt, **kw)))


def test_grayscale_bilevel_and_palette_become_rgb() -> None:
    gray = Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L")
    np.testing.assert_array_equal(_decode(gray), [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]])
    bilevel = Image.fromarray(np.array([[0, 255]], np.uint8), "L").convert("1")
    np.testing.assert_array_equal(_decode(bilevel), [[[0, 0, 0], [255, 255, 255]]])
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putdata([0, 1])
    np.testing.assert_array_equal(_decode(pal), [[[10, 20, 30], [200, 100, 50]]])


def test_transparency_is_composited_onto_the_fixed_background() -> None:
    rgba = Image.fromarray(
        np.array([[[200, 10, 10, 255], [200, 10, 10, 0], [0, 0, 0, 128]]], np.uint8), "RGBA"
    )
    out = _decode(rgba).astype(int)
    np.testing.assert_array_equal(out[0, 0], [200, 10, 10])
    np.testing.assert_array_equal(out[0, 1], BACKGROUND)
    expected = np.round(np.array(BACKGROUND) * (127 / 255))
    assert np.abs(out[0, 2] - expected).max() <= 1
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), "LA")
    np.testing.assert_array_equal(_decode(la), [[[50, 50, 50], list(BACKGROUND)]])
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.putdata([0, 1])
    pal.info["transparency"] = 0
    np.testing.assert_array_equal(_decode(pal, transparency=0), [[list(BACKGROUND), [200, 100, 50]]])


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = _decode(cmyk, "JPEG", quality=95).astype(int)
    assert out[8, 8, 0] > 230 and out[8, 8, 1] < 30 and out[8, 8, 2] < 30


def test_16_bit_grayscale_is_scaled_to_8_bit() -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=">u2")
    out = np.asarray(decode_image(raw_png(4, 1, 16, 0, png_rows(values))))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    dark = np.array([[0, 100, 200]], dtype=">u2")  # a dark 16-bit image stays dark
    np.testing.assert_array_equal(
        np.asarray(decode_image(raw_png(3, 1, 16, 0, png_rows(dark))))[0, :, 0], [0, 0, 1]
    )


def test_16_bit_rgb_and_rgba_become_8_bit_rgb() -> None:
    rgb = np.zeros((1, 2, 3), dtype=">u2")
    rgb[0, 0] = (65535, 32768, 0)
    rgb[0, 1] = (0, 0, 65535)
    out = np.asarray(decode_image(raw_png(2, 1, 16, 2, png_rows(rgb))))
    np.testing.assert_array_equal(out[0], [[255, 128, 0], [0, 0, 255]])
    rgba = np.zeros((1, 2, 4), dtype=">u2")
    rgba[0, 0] = (65535, 0, 0, 65535)
    rgba[0, 1] = (65535, 0, 0, 0)
    out = np.asarray(decode_image(raw_png(2, 1, 16, 6, png_rows(rgba))))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], list(BACKGROUND)])


def test_reduced_scale_jpeg_decoding_keeps_both_sides_above_min_size(photos_dir: Path) -> None:
    from siam.data.transforms import Preprocessing, eval_transform

    path = photos_dir / "path.jpg"  # 2560 x 1600
    small = load_image(path, min_size=500)
    assert small.size == (1280, 800) and small.mode == "RGB"
    assert load_image(path, min_size=900).size == (2560, 1600)  # 1/2 scale would give 800 < 900
    tf = eval_transform(Preprocessing())
    diff = (tf(small) - tf(real_photo(str(path)))).abs().mean()
    assert diff < 0.05  # about one grey level: the model sees the same picture
    png = encode(rgb_array(80, 64), "PNG")
    assert decode_image(png, min_size=10).size == (80, 64)  # only JPEG has reduced decoding
    with pytest.raises(ValueError, match="min_size"):
        load_image(path, min_size=0)
