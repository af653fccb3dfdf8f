"""Attribute masks for the optional mask supervision (``optim.mask_weight``; not in the paper).

Two sources of per-image masks, both giving ``(K, H, W)`` bool arrays in the model's attribute
order (:class:`MaskSource`):

* :class:`PlantedMasks` -- a ``siam synth`` world's ``truth/masks/sun/<row>.npz`` (key ``masks``,
  ``(K, H, W)`` bool in the order of ``truth/meta.json``'s ``attributes``);
* :class:`FolderMasks` -- a segmentation dataset in a generic layout: ``DIR/masks/<image stem>.png``
  (one single-channel class-index PNG per image, 8- or 16-bit, the image's size) plus
  ``DIR/mask_classes.csv`` with the header ``class_index,class_name,attribute``: many classes may
  map to one attribute, a blank attribute means none. Every class found in a PNG must be listed.
  Attributes that no class maps to have no mask (their ``valid`` is False).

ADE20K: :data:`ADE20K_MAPPING` (``ade20k_to_sun33.csv``, shipped with the package) maps the 150
SceneParsing classes (``ADEChallengeData2016``, whose annotations already are class-index PNGs,
0 = unlabelled) to the SUN attributes they cover; it is a valid ``mask_classes.csv``.
:func:`decode_ade20k_seg` reads the full dataset's ``*_seg.png`` encoding (class = R / 10 * 256 +
G, instance in B) and :func:`convert_ade20k` writes the generic layout from it
(``siam data masks-from-ade20k``).

:class:`MaskedImages` puts the masks into training samples: it applies the image augmentation
itself, with the same :class:`~siam.data.transforms.TrainParams` for the image and its masks (the
full rotation + crop + flip, exactly as :meth:`TrainTransform.apply`), and pools the warped masks
to the coverage of each cell of the model's grid.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from siam.data.samples import Sample
from siam.data.transforms import EvalTransform, TrainTransform, _warp_grid
from siam.errors import DatasetError
from siam.vocab import normalize_name

__all__ = [
    "MASK_CLASSES_FILE", "MASKS_DIR", "ADE20K_MAPPING", "MaskSource", "PlantedMasks", "FolderMasks",
    "MaskedImages", "read_mask_classes", "read_class_index_png", "class_index_to_masks",
    "decode_ade20k_seg", "convert_ade20k", "warp_masks", "masks_fraction_ids", "open_mask_source",
]

MASK_CLASSES_FILE = "mask_classes.csv"
MASKS_DIR = "masks"
MASK_CLASSES_HEADER: tuple[str, ...] = ("class_index", "class_name", "attribute")
ADE20K_MAPPING = "ade20k_to_sun33.csv"  # in the siam.data package
MAX_CLASS_INDEX = 65_535  # a 16-bit class-index PNG
ADE_R_STEP = 10  # ADE20K *_seg.png: class = R / 10 * 256 + G
ADE_G_BASE = 256
CLASS_INDEX_MODES: tuple[str, ...] = ("L", "P", "I;16", "I")


class MaskSource(Protocol):
    """Per-image attribute masks; ``valid`` (K,) bool: which attributes any mask annotates."""

    valid: np.ndarray

    def masks(self, ident: str) -> np.ndarray | None:
        """(K, H, W) bool masks of the image with this id, or None when it has none."""
        ...

    def has(self, ident: str) -> bool:
        """Whether the image with this id has a mask file (no decoding)."""
        ...


# --- mask_classes.csv and class-index PNGs -------------------------------------------------------


def read_mask_classes(path: str | os.PathLike[str], attributes: Sequence[str]) -> dict[int, int]:
    """``class_index -> attribute column`` (in ``attributes``) of a mask_classes.csv.

    Blank attributes are left out (class known, no attribute). Raises :class:`DatasetError` naming
    the file, line and column for a wrong header, a bad or repeated index, or an unknown attribute.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: file not found (expected {MASK_CLASSES_FILE} with header "
                           f"{','.join(MASK_CLASSES_HEADER)})")
    column = {normalize_name(a): j for j, a in enumerate(attributes)}
    out: dict[int, int] = {}
    seen: set[int] = set()
    with p.open(newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        header = [h.strip() for h in next(rows, [])]
        if tuple(header) != MASK_CLASSES_HEADER:
            raise DatasetError(f"{p}, line 1: header must be {','.join(MASK_CLASSES_HEADER)}, "
                               f"got {','.join(header)!r}")
        for line, row in enumerate(rows, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(MASK_CLASSES_HEADER):
                raise DatasetError(f"{p}, line {line}: expected 3 columns (class_index,class_name,attribute), "
                                   f"got {len(row)}: {row!r}")
            raw, _, attr = (c.strip() for c in row)
            try:
                idx = int(raw)
            except ValueError:
                idx = -1
            if not 0 <= idx <= MAX_CLASS_INDEX:
                raise DatasetError(f"{p}, line {line}, column class_index: got {raw!r}; allowed: an integer "
                                   f"in [0, {MAX_CLASS_INDEX}]")
            if idx in seen:
                raise DatasetError(f"{p}, line {line}, column class_index: class {idx} is listed twice")
            seen.add(idx)
            if not attr:
                continue
            j = column.get(normalize_name(attr))
            if j is None:
                raise DatasetError(f"{p}, line {line}, column attribute: unknown attribute {attr!r}; allowed: "
                                   f"blank or one of the model's attributes {list(attributes)}")
            out[idx] = j
    for idx in seen - set(out):
        out.setdefault(idx, -1)
    return out


def read_class_index_png(path: str | os.PathLike[str]) -> np.ndarray:
    """(H, W) int64 class indices of a single-channel PNG (mode L, P, I;16 or I)."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            mode = im.mode
            if mode not in CLASS_INDEX_MODES:
                raise DatasetError(f"{p}: a class-index mask must be single-channel ({', '.join(CLASS_INDEX_MODES)}), "
                                   f"got mode {mode!r}; ADE20K *_seg.png files convert with "
                                   "'siam data masks-from-ade20k'")
            return np.asarray(im).astype(np.int64)
    except OSError as exc:
        raise DatasetError(f"{p}: not a readable PNG ({exc})") from None


def class_index_to_masks(index: np.ndarray, classes: Mapping[int, int], k: int, *, where: str = "mask") -> np.ndarray:
    """(H, W) class indices -> (K, H, W) bool attribute masks; every class must be in ``classes``."""
    found = np.unique(index)
    unknown = [int(c) for c in found if int(c) not in classes]
    if unknown:
        raise DatasetError(f"{where}: class indices {unknown[:10]} are not listed in {MASK_CLASSES_FILE}")
    lut = np.full(int(found.max()) + 1, -1, dtype=np.int64)
    for c in found:
        lut[int(c)] = classes[int(c)]
    attr = lut[index]  # (H, W), -1 = none
    return attr[None, :, :] == np.arange(k)[:, None, None]  # (K, H, W)


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0]  # (H, W)


def _check_size(masks: np.ndarray, image: Path | None, where: Path) -> None:
    if image is None:
        return
    hw = _image_size(image)
    if tuple(masks.shape[-2:]) != hw:
        raise DatasetError(f"{where}: mask is {masks.shape[-2]} x {masks.shape[-1]} (H x W) but its image "
                           f"{image} is {hw[0]} x {hw[1]}; masks must have the image's size")


class FolderMasks:
    """``DIR/masks/<stem>.png`` + ``DIR/mask_classes.csv`` (see the module docstring).

    ``images``: image id -> image path (the mask is found by the path's stem, checked against
    the image's size); ``attributes``: the model's attribute names (K).
    """

    def __init__(self, root: str | os.PathLike[str], attributes: Sequence[str], images: Mapping[str, Path]) -> None:
        self.root = Path(root)
        self.k = len(attributes)
        self.classes = read_mask_classes(self.root / MASK_CLASSES_FILE, attributes)
        self.valid = np.zeros(self.k, dtype=bool)
        self.valid[[j for j in self.classes.values() if j >= 0]] = True
        self.images = dict(images)

    def _path(self, ident: str) -> Path | None:
        image = self.images.get(ident)
        return None if image is None else self.root / MASKS_DIR / f"{Path(image).stem}.png"

    def has(self, ident: str) -> bool:
        p = self._path(ident)
        return p is not None and p.is_file()

    def masks(self, ident: str) -> np.ndarray | None:
        p = self._path(ident)
        if p is None or not p.is_file():
            return None
        image = self.images[ident]
        m = class_index_to_masks(read_class_index_png(p), self.classes, self.k, where=str(p))
        _check_size(m, image, p)
        return m


class PlantedMasks:
    """A planted world's ``truth/masks/sun`` (``folder``), reordered to ``attributes``."""

    def __init__(self, folder: str | os.PathLike[str], attributes: Sequence[str],
                 images: Mapping[str, Path] | None = None) -> None:
        from siam.data.sun_attributes import select_columns

        self.folder = Path(folder)
        meta_p = self.folder.parent.parent / "meta.json"
        try:
            names = json.loads(meta_p.read_text())["attributes"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{meta_p}: cannot read the planted attribute names ({exc}); expected the "
                               "'siam synth' truth/ layout (truth/meta.json beside truth/masks/sun)") from None
        self.cols = select_columns(names, list(attributes), where=str(meta_p))
        self.k_file = len(names)
        self.valid = np.ones(len(attributes), dtype=bool)
        self.images = dict(images or {})

    def has(self, ident: str) -> bool:
        return (self.folder / f"{ident}.npz").is_file()

    def masks(self, ident: str) -> np.ndarray | None:
        p = self.folder / f"{ident}.npz"
        if not p.is_file():
            return None
        with np.load(p, allow_pickle=False) as z:
            if "masks" not in z:
                raise DatasetError(f"{p}: expected key 'masks', found {sorted(z.files)}")
            m = np.asarray(z["masks"]).astype(bool)
        if m.ndim != 3 or m.shape[0] != self.k_file:
            raise DatasetError(f"{p}: masks must be (K={self.k_file}, H, W), got {m.shape}")
        _check_size(m, self.images.get(ident), p)
        return m[self.cols]


def open_mask_source(path: str | os.PathLike[str], attributes: Sequence[str],
                     images: Mapping[str, Path]) -> MaskSource:
    """The source in ``path``: a generic folder (holds mask_classes.csv), a planted world (holds
    truth/masks/sun) or a planted truth/masks/sun folder itself."""
    p = Path(path)
    if (p / MASK_CLASSES_FILE).is_file():
        return FolderMasks(p, attributes, images)
    if (p / "truth" / "masks" / "sun").is_dir():
        return PlantedMasks(p / "truth" / "masks" / "sun", attributes, images)
    if p.is_dir() and (p.parent.parent / "meta.json").is_file():
        return PlantedMasks(p, attributes, images)
    raise DatasetError(f"data.masks {str(p)!r}: expected a folder with {MASK_CLASSES_FILE} and {MASKS_DIR}/, "
                       "a 'siam synth' world (with truth/masks/sun) or its truth/masks/sun folder")


def masks_fraction_ids(ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The seeded ``round(fraction * n)`` of ``ids`` that keep their masks (order-independent)."""
    ordered = sorted(set(ids))
    n = round(fraction * len(ordered))
    pick = np.random.default_rng(seed).permutation(len(ordered))[:n]
    return {ordered[i] for i in pick}


# --- geometry ------------------------------------------------------------------------------------


def warp_masks(masks: np.ndarray | torch.Tensor, transform: TrainTransform | EvalTransform, params: Any,
               grid: int) -> torch.Tensor:
    """(K, H, W) masks -> (K, grid, grid) float32 coverage of the model's cells after the image's
    geometric transform: resize to ``resize`` (antialiased), then the eval centre crop
    (``params`` None) or :meth:`TrainTransform.apply`'s rotation + crop + flip for ``params``.
    Pixels a rotation brings in from outside the image cover nothing."""
    pre = transform.pre
    c = pre.crop
    x = torch.as_tensor(np.asarray(masks), dtype=torch.float32)[None]  # (1, K, H, W)
    if tuple(x.shape[-2:]) != (pre.resize, pre.resize):
        x = F.interpolate(x, size=(pre.resize, pre.resize), mode="bilinear", align_corners=False, antialias=True)
    if params is None:
        top = (pre.resize - c) // 2
        x = x[..., top : top + c, top : top + c]
    elif params.angle == 0.0:
        x = x[..., params.top : params.top + c, params.left : params.left + c]
        x = x.flip(-1) if params.flip else x
    else:
        x = F.grid_sample(x, _warp_grid(pre.resize, c, params), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return F.adaptive_avg_pool2d(x, grid)[0].clamp_(0.0, 1.0)  # (K, grid, grid)


class MaskedImages(Dataset):
    """Samples of ``dataset`` (uint8 (3, resize, resize) images) augmented by ``transform`` with
    their masks' coverage on the model grid (``Sample.masks`` (K, grid, grid), ``masks_valid`` (K,)).

    ``transform``: a :class:`TrainTransform` (one :class:`TrainParams` draw for image and masks)
    or an :class:`EvalTransform`. ``keep``: the ids allowed to use their masks (None: all).
    """

    def __init__(self, dataset: Dataset, transform: TrainTransform | EvalTransform, source: MaskSource,
                 grid: int, *, keep: set[str] | None = None) -> None:
        self.dataset, self.transform, self.source, self.grid, self.keep = dataset, transform, source, grid, keep

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        s: Sample = self.dataset[index]
        if s.image.dtype != torch.uint8:
            raise ValueError(f"MaskedImages needs uint8 images from the wrapped dataset, got {s.image.dtype} "
                             f"for {s.id}")
        train = isinstance(self.transform, TrainTransform)
        params = self.transform.sample_params() if train else None
        image = self.transform.apply(s.image, params) if train else self.transform(s.image)
        m = self.source.masks(s.id) if self.keep is None or s.id in self.keep else None
        cover = valid = None
        if m is not None:
            cover = warp_masks(m, self.transform, params, self.grid)
            valid = torch.from_numpy(self.source.valid.copy())
        return Sample(image=image, id=s.id, source=s.source, attributes=s.attributes, scores=s.scores,
                      variances=s.variances, masks=cover, masks_valid=valid)


# --- ADE20K ----------------------------------------------------------------------------------------


def ade20k_mapping_path() -> Path:
    """The shipped ADE20K-150 -> SUN attribute table (a valid mask_classes.csv)."""
    return Path(str(resources.files("siam.data") / ADE20K_MAPPING))


def decode_ade20k_seg(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ADE20K full-dataset ``*_seg.png`` (H, W, 3) uint8 -> (class (H, W) int64, instance (H, W) int64).

    class = R / 10 * 256 + G (the dataset's own decoding, 0 = unlabelled); instance ids are the
    distinct values of B, numbered 1.. in increasing order (0 where B is 0).
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] < 3 or a.dtype != np.uint8:
        raise DatasetError(f"an ADE20K _seg.png must be (H, W, 3) uint8 RGB, got {a.dtype} of shape {a.shape}")
    r, g, b = (a[..., i].astype(np.int64) for i in range(3))
    cls = (r // ADE_R_STEP) * ADE_G_BASE + g
    _, inst = np.unique(b, return_inverse=True)
    inst = inst.reshape(b.shape) + (0 if (b == 0).any() else 1)
    return cls, inst


def _name_keys(name: str) -> list[str]:
    return [normalize_name(s) for s in name.split(",") if s.strip()]


def convert_ade20k(ade: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   object_names: str | os.PathLike[str] | None = None, show_progress: bool = False) -> dict[str, int]:
    """Write ``OUT/masks/<stem>.png`` (16-bit class index) for every ``*_seg.png`` under ``ade``.

    ``<stem>`` drops the ``_seg`` suffix, so the mask pairs with the image ``<stem>.jpg``. With
    ``object_names`` (a text file, line i = the name of class i, 1-based; synonyms comma-separated)
    also writes ``OUT/mask_classes.csv``, each class mapped through the shipped ADE20K table by
    name (blank when no synonym matches). ``show_progress``: a bar / progress lines per mask.
    Returns counts {"masks", "classes", "mapped"}.
    """
    from siam.progress import progress

    src, dst = Path(ade), Path(out)
    files = sorted(src.rglob("*_seg.png"))
    if not files:
        raise DatasetError(f"{src}: no ADE20K *_seg.png files found")
    (dst / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    bar = progress(total=len(files), desc="masks-from-ade20k", unit="mask", enabled=show_progress)
    for f in files:
        with Image.open(f) as im:
            if im.mode != "RGB":
                raise DatasetError(f"{f}: an ADE20K _seg.png is RGB, got mode {im.mode!r}")
            cls, _ = decode_ade20k_seg(np.asarray(im))
        if cls.max() > MAX_CLASS_INDEX:
            raise DatasetError(f"{f}: class {int(cls.max())} does not fit a 16-bit PNG")
        Image.fromarray(cls.astype(np.uint16)).save(dst / MASKS_DIR / f"{f.stem.removesuffix('_seg')}.png")
        bar.update(1)
    bar.close()
    counts = {"masks": len(files), "classes": 0, "mapped": 0}
    if object_names is not None:
        table: dict[str, str] = {}
        with ade20k_mapping_path().open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["attribute"].strip():
                    for key in _name_keys(row["class_name"]):
                        table.setdefault(key, row["attribute"].strip())
        names = Path(object_names).read_text(encoding="utf-8").splitlines()
        with (dst / MASK_CLASSES_FILE).open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(MASK_CLASSES_HEADER)
            w.writerow([0, "unlabelled", ""])
            for i, name in enumerate(names, start=1):
                attr = next((table[k] for k in _name_keys(name) if k in table), "")
                w.writerow([i, name.strip(), attr])
                counts["mapped"] += bool(attr)
        counts["classes"] = len(names)
    return counts
