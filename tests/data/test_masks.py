"""Mask sources for the optional mask supervision: class-index PNGs, ADE20K, planted masks, geometry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siam.data.masks import (
    FolderMasks, MaskedImages, PlantedMasks, ade20k_mapping_path, class_index_to_masks, convert_ade20k,
    decode_ade20k_seg, masks_fraction_ids, open_mask_source, read_class_index_png, read_mask_classes, warp_masks,
)
from siam.data.transforms import Preprocessing, TrainParams, eval_transform, train_transform
from siam.errors import DatasetError
from siam.vocab import SUN33

NAMES = ("trees", "grass", "road")


def _classes_csv(path: Path, rows: list[str], header: str = "class_index,class_name,attribute") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_mask_classes_map_many_classes_to_one_attribute(tmp_path: Path) -> None:
    p = _classes_csv(tmp_path / "mask_classes.csv",
                     ["0,other,", "1,tree,trees", "2,palm,Trees", "3,grass,grass", "7,sky,"])
    assert read_mask_classes(p, NAMES) == {1: 0, 2: 0, 3: 1, 0: -1, 7: -1}
    index = np.array([[0, 1, 2], [3, 7, 3]])
    m = class_index_to_masks(index, read_mask_classes(p, NAMES), 3)
    assert m.dtype == bool and m.shape == (3, 2, 3)
    assert m[0].tolist() == [[False, True, True], [False, False, False]]
    assert m[1].tolist() == [[False, False, False], [True, False, True]]
    assert not m[2].any()
    with pytest.raises(DatasetError, match=r"class indices \[9\] are not listed"):
        class_index_to_masks(np.array([[9]]), {0: -1}, 3)


@pytest.mark.parametrize(("rows", "header", "match"), [
    (["1,tree,trees"], "index,name,attribute", r"line 1: header must be"),
    (["1,tree,trees", "x,grass,grass"], None, r"line 3, column class_index: got 'x'"),
    (["1,tree,trees", "1,palm,trees"], None, r"line 3, column class_index: class 1 is listed twice"),
    (["1,tree,trees", "2,lake,lakes"], None, r"line 3, column attribute: unknown attribute 'lakes'"),
    (["1,tree"], None, r"line 2: expected 3 columns"),
])
def test_bad_mask_classes_name_file_line_and_column(tmp_path: Path, rows: list[str], header: str | None,
                                                     match: str) -> None:
    p = _classes_csv(tmp_path / "mask_classes.csv", rows, header or "class_index,class_name,attribute")
    with pytest.raises(DatasetError, match=match) as info:
        read_mask_classes(p, NAMES)
    assert str(p) in str(info.value)


def test_class_index_png_modes(tmp_path: Path) -> None:
    idx = np.array([[0, 300], [5, 65535]], dtype=np.uint16)
    Image.fromarray(idx).save(tmp_path / "a.png")
    assert read_class_index_png(tmp_path / "a.png").tolist() == idx.astype(np.int64).tolist()
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match=r"single-channel .*got mode 'RGB'.*masks-from-ade20k"):
        read_class_index_png(tmp_path / "rgb.png")


def _ade_seg(classes: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Encode like ADE20K's *_seg.png: R = class // 256 * 10, G = class % 256, B = instance."""
    return np.stack([(classes // 256) * 10, classes % 256, instances], axis=-1).astype(np.uint8)


def test_ade20k_seg_decoding_and_conversion_map_pixels_to_attributes(tmp_path: Path) -> None:
    # full-dataset class ids (past 255, so R is used): 1 = tree, 300 = river, 2 = sky, 1000 = fence
    classes = np.array([[1, 1, 300, 300], [2, 1000, 300, 0]])
    instances = np.array([[3, 3, 7, 7], [1, 9, 7, 0]])
    seg = _ade_seg(classes, instances)
    cls, inst = decode_ade20k_seg(seg)
    assert cls.tolist() == classes.tolist()
    assert inst[0, 0] == inst[0, 1] and inst[0, 2] == inst[1, 2] and inst[0, 0] != inst[0, 2] and inst[1, 3] == 0
    ade = tmp_path / "ade" / "images" / "training" / "a"
    ade.mkdir(parents=True)
    Image.fromarray(seg).save(ade / "ADE_train_00000001_seg.png")
    names = ["" for _ in range(1000)]
    names[0], names[1], names[299], names[999] = "tree", "sky", "river", "fence, fencing"
    (tmp_path / "objects.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "out"
    counts = convert_ade20k(tmp_path / "ade", out, object_names=tmp_path / "objects.txt")
    assert counts["masks"] == 1 and counts["classes"] == 1000 and counts["mapped"] == 3
    png = out / "masks" / "ADE_train_00000001.png"
    assert read_class_index_png(png).tolist() == classes.tolist()
    attrs = ("trees", "running_water", "fencing_railing", "sky_attr")
    with pytest.raises(DatasetError, match="unknown attribute 'running_water'"):  # not in the model's list
        read_mask_classes(out / "mask_classes.csv", ("trees", "fencing_railing"))
    image = tmp_path / "ADE_train_00000001.jpg"
    Image.fromarray(np.zeros((2, 4, 3), dtype=np.uint8)).save(image)
    src = FolderMasks(out, attrs, {"r0": image})
    assert src.valid.tolist() == [True, True, True, False] and src.has("r0") and not src.has("r1")
    m = src.masks("r0")
    assert m[0].tolist() == (classes == 1).tolist()  # tree -> trees
    assert m[1].tolist() == (classes == 300).tolist()  # river -> running_water
    assert m[2].tolist() == (classes == 1000).tolist()  # fence -> fencing_railing
    assert not m[3].any()
    # a mask of the wrong size is refused, naming both sizes
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(image)
    with pytest.raises(DatasetError, match=r"mask is 2 x 4 .* is 3 x 4"):
        FolderMasks(out, attrs, {"r0": image}).masks("r0")


def test_shipped_ade20k_table_covers_the_documented_classes() -> None:
    path = ade20k_mapping_path()
    classes = read_mask_classes(path, SUN33)  # a valid mask_classes.csv for the 33 SUN attributes
    with path.open(newline="") as fh:
        rows = {r["class_name"].split(",")[0]: r for r in csv.DictReader(fh)}
    assert len(classes) == 151  # 0 + the 150 SceneParsing classes
    for name, attr in [("tree", "trees"), ("grass", "grass"), ("sea", "ocean"), ("river", "running_water"),
                       ("road", "road"), ("fence", "fencing_railing"), ("sand", "sand"), ("rock", "rock_stone"),
                       ("waterfall", "running_water"), ("lake", "still_water"), ("flower", "flowers")]:
        idx = int(rows[name]["class_index"])
        assert SUN33[classes[idx]] == attr, name
    assert classes[int(rows["sky"]["class_index"])] == -1


def _planted(tmp_path: Path, names: tuple[str, ...], masks: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "world" / "truth" / "masks" / "sun"
    folder.mkdir(parents=True)
    (tmp_path / "world" / "truth" / "meta.json").write_text(json.dumps({"attributes": list(names)}))
    for ident, m in masks.items():
        np.savez(folder / f"{ident}.npz", masks=m)
    return folder


def test_planted_masks_follow_the_model_attribute_order(tmp_path: Path) -> None:
    m = np.zeros((3, 4, 4), dtype=bool)
    m[0, 0], m[1, 1], m[2, 2] = True, True, True
    folder = _planted(tmp_path, ("road", "trees", "grass"), {"5": m})
    for src in (PlantedMasks(folder, NAMES), open_mask_source(tmp_path / "world", NAMES, {}),
                open_mask_source(folder, NAMES, {})):
        got = src.masks("5")
        assert [int(np.flatnonzero(got[k].any(1))[0]) for k in range(3)] == [1, 2, 0]  # trees, grass, road
        assert src.masks("6") is None and src.valid.all()
    with pytest.raises(DatasetError, match="expected a folder with mask_classes.csv"):
        open_mask_source(tmp_path, NAMES, {})


def test_masks_fraction_is_seeded_and_exact() -> None:
    ids = [str(i) for i in range(200)]
    a = masks_fraction_ids(ids, 0.1, 0)
    assert len(a) == 20 and a == masks_fraction_ids(list(reversed(ids)), 0.1, 0)
    assert a != masks_fraction_ids(ids, 0.1, 1) and masks_fraction_ids(ids, 1.0, 0) == set(ids)


def test_warped_masks_follow_the_image_crop_flip_and_rotation() -> None:
    pre = Preprocessing(resize=32, crop=24, max_rotation=20.0, hflip=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    tt = train_transform(pre)
    mask = np.zeros((1, 32, 32), dtype=bool)
    mask[0, 4:20, 2:12] = True
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[0][torch.from_numpy(mask[0])] = 255  # the mask painted into the red channel
    for params in (TrainParams(0.0, 3, 5, False), TrainParams(0.0, 8, 1, True), TrainParams(13.0, 2, 6, True),
                   TrainParams(-17.0, 5, 0, False)):
        painted = tt.apply(image, params)[0]  # (24, 24) in [0, 1]: the image's own view of the mask
        got = warp_masks(mask, tt, params, 24)[0]  # grid = crop: no pooling
        assert torch.allclose(got, painted, atol=1e-4), params
        pooled = warp_masks(mask, tt, params, 4)[0]
        assert torch.allclose(pooled, painted.reshape(4, 6, 4, 6).mean((1, 3)), atol=1e-4)
    exact = warp_masks(mask, tt, TrainParams(0.0, 8, 1, True), 24)[0]
    assert torch.equal(exact, torch.from_numpy(mask[0, 8:32, 1:25]).float().flip(-1))
    ev = eval_transform(pre)
    assert torch.allclose(warp_masks(mask, ev, None, 24)[0], torch.from_numpy(mask[0, 4:28, 4:28]).float())


def test_masked_images_draw_one_augmentation_for_image_and_masks(tmp_path: Path) -> None:
    from siam.data.samples import Sample

    pre = Preprocessing(resize=16, crop=16, max_rotation=30.0, hflip=True, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    m = np.zeros((3, 16, 16), dtype=bool)
    m[0, :, :5] = True
    image = torch.zeros(3, 16, 16, dtype=torch.uint8)
    image[0, :, :5] = 255
    folder = _planted(tmp_path, NAMES, {"0": m, "1": m})
    base = [Sample(image=image, id=str(i), source="sun", attributes=torch.zeros(3)) for i in range(3)]
    torch.manual_seed(0)
    ds = MaskedImages(base, train_transform(pre), PlantedMasks(folder, NAMES), 16, keep={"0", "2"})
    for _ in range(5):
        s = ds[0]
        assert torch.allclose(s.masks[0], s.image[0], atol=1e-4) and s.masks_valid.all()
    assert ds[1].masks is None  # not in keep
    assert ds[2].masks is None  # no mask file
