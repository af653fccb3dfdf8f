from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

import siam.data.transforms as T
from siam.data.transforms import (
    Preprocessing,
    TrainParams,
    eval_transform,
    to_uint8_tensor,
    train_transform,
)
from tests.data._fakes import SMALL, real_photo, rgb_array

PRE = Preprocessing(**SMALL, max_rotation=5.0)


def _norm(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (x - mean) / std


def _resized01(image: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """Reference: torchvision uint8 resize, as float in [0, 1] (3, R, R)."""
    x = tvf.resize(tvf.pil_to_tensor(image), [pre.resize, pre.resize], antialias=True)
    return x.float() / 255.0


# --- Preprocessing -------------------------------------------------------------------------------

def test_preprocessing_validates_and_round_trips() -> None:
    pre = Preprocessing(resize=144, crop=128, max_rotation=0.0, hflip=False)
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError, match="max_rotation"):
        Preprocessing(max_rotation=-1.0)
    with pytest.raises(ValueError, match="crop <= resize"):
        Preprocessing(resize=100, crop=128)
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({"resize": 10, "crop": 8, "colour": 1})


# --- eval ----------------------------------------------------------------------------------------

def test_eval_matches_the_torchvision_pipeline_on_a_real_photo(photos_dir: Path) -> None:
    pre = Preprocessing()  # paper sizes: 500 / 450
    image = real_photo(str(photos_dir / "storm.jpg"))
    ref = v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize((500, 500), antialias=True),
            v2.CenterCrop(450),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(pre.mean), list(pre.std)),
        ]
    )(image)
    out = eval_transform(pre)(image)
    assert out.shape == (3, 450, 450) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(eval_transform(pre)(image), out, atol=0, rtol=0)  # deterministic


@pytest.mark.parametrize("name", ["icecold_5120x2880.png", "altai_portrait.png"])
def test_both_presets_on_large_real_photos_agree_with_pillow(photos_dir: Path, name: str) -> None:
    pre = Preprocessing()
    image = real_photo(str(photos_dir / name))
    out = eval_transform(pre)(image)
    # Independent reference: Pillow's own antialiased resize + centre crop.
    ref = np.asarray(image.resize((500, 500), Image.BILINEAR).crop((25, 25, 475, 475)))
    ref_t = _norm(torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255.0, pre)
    assert (out - ref_t).abs().mean() < 0.02
    torch.manual_seed(0)
    train = train_transform(pre)(image)
    assert train.shape == (3, 450, 450) and torch.isfinite(train).all()
    assert (train.mean((1, 2)) - out.mean((1, 2))).abs().max() < 0.1


def test_inputs_pil_tensor_array_and_modes_agree() -> None:
    arr = rgb_array(50, 40)
    tf = eval_transform(PRE)
    a = tf(Image.fromarray(arr))
    torch.testing.assert_close(tf(torch.from_numpy(arr).permute(2, 0, 1)), a, atol=0, rtol=0)
    torch.testing.assert_close(tf(arr), a, atol=0, rtol=0)
    gray = Image.fromarray(arr[..., 0])
    g = tf(gray)
    assert g.shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"\(3, H, W\) uint8 tensor"):
        tf(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 array"):
        tf(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="PIL image"):
        tf("image.jpg")


def test_images_stay_uint8_through_the_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.dtype] = []
    real = T.tvf.resize

    def spy(x: torch.Tensor, *args: object, **kw: object) -> torch.Tensor:
        seen.append(x.dtype)
        out = real(x, *args, **kw)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(T.tvf, "resize", spy)
    eval_transform(PRE)(Image.fromarray(rgb_array(60, 45)))
    assert seen == [torch.uint8] * 2
    rotated = TrainParams(angle=3.0, top=1, left=2, flip=False)
    train_transform(PRE).apply(Image.fromarray(rgb_array(60, 45)), rotated)  # <= 2x resize: fused, no resize
    assert seen == [torch.uint8] * 2
    train_transform(PRE).apply(Image.fromarray(rgb_array(3 * 36, 80)), rotated)  # > 2x: uint8 reduction first
    assert seen == [torch.uint8] * 4


# --- train ---------------------------------------------------------------------------------------

def test_train_without_rotation_is_an_exact_crop() -> None:
    image = Image.fromarray(rgb_array(60, 45))
    tf = train_transform(PRE)
    ref = _norm(_resized01(image, PRE), PRE)
    for top, left in [(0, 0), (4, 1), (2, 4)]:
        out = tf.apply(image, TrainParams(angle=0.0, top=top, left=left, flip=False))
        torch.testing.assert_close(out, ref[:, top : top + 32, left : left + 32], atol=1e-5, rtol=0)
        flipped = tf.apply(image, TrainParams(angle=0.0, top=top, left=left, flip=True))
        torch.testing.assert_close(flipped, out.flip(-1), atol=0, rtol=0)


@pytest.mark.parametrize("flip", [False, True])
def test_fused_warp_equals_rotate_then_crop_then_flip(flip: bool) -> None:
    pre = Preprocessing(resize=120, crop=100)
    image = Image.fromarray(rgb_array(120, 120, seed=5))  # already resize x resize: no resampling before
    params = TrainParams(angle=4.0, top=7, left=13, flip=flip)
    out = train_transform(pre).apply(image, params)
    x = _resized01(image, pre) - torch.tensor(pre.mean).view(3, 1, 1)
    ref = tvf.rotate(x, 4.0, interpolation=v2.InterpolationMode.BILINEAR)
    ref = tvf.crop(ref, 7, 13, 100, 100)
    if flip:
        ref = tvf.horizontal_flip(ref)
    ref = ref / torch.tensor(pre.std).view(3, 1, 1)
    # Identical away from the border, where torchvision and grid_sample pad differently.
    torch.testing.assert_close(out[:, 3:-3, 3:-3], ref[:, 3:-3, 3:-3], atol=1e-4, rtol=0)
    assert not torch.allclose(out, train_transform(pre).apply(image, params._replace(angle=-4.0)))


def test_rotation_fills_with_the_mean_colour() -> None:
    pre = Preprocessing(resize=100, crop=90, max_rotation=5.0)
    white = Image.new("RGB", (100, 100), (255, 255, 255))
    out = train_transform(pre).apply(white, TrainParams(angle=5.0, top=0, left=0, flip=False))
    # The top-left corner of the crop lies outside the rotated image: mean colour = 0.
    assert out[:, 0, 0].abs().max() < 1e-6
    white_norm = _norm(torch.ones(3, 1, 1), pre).view(3)
    torch.testing.assert_close(out[:, 45, 45], white_norm, atol=1e-5, rtol=0)


def test_sampled_parameters_cover_the_configured_ranges() -> None:
    tf = train_transform(PRE, generator=torch.Generator().manual_seed(0))
    draws = [tf.sample_params() for _ in range(400)]
    angles = np.array([p.angle for p in draws])
    assert angles.min() < -4.0 and angles.max() > 4.0 and np.abs(angles).max() <= 5.0
    tops = {p.top for p in draws}
    lefts = {p.left for p in draws}
    assert tops == set(range(5)) and lefts == set(range(5))  # resize - crop = 4
    flips = [p.flip for p in draws]
    assert 150 < sum(flips) < 250
    fixed = train_transform(Preprocessing(**SMALL, max_rotation=0.0, hflip=False))
    assert all(p.angle == 0.0 and not p.flip for p in (fixed.sample_params() for _ in range(50)))


def test_train_is_random_but_reproducible_from_a_seed() -> None:
    image = Image.fromarray(rgb_array(60, 45))
    a = train_transform(PRE, generator=torch.Generator().manual_seed(3))(image)
    b = train_transform(PRE, generator=torch.Generator().manual_seed(3))(image)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.manual_seed(1)
    tf = train_transform(PRE)
    outs = [tf(image) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)


def test_to_uint8_tensor_is_chw_uint8() -> None:
    arr = rgb_array(20, 10)
    x = to_uint8_tensor(Image.fromarray(arr))
    assert x.shape == (3, 10, 20) and x.dtype == torch.uint8
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), arr)
