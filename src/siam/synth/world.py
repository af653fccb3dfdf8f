"""``siam synth``: planted-truth scenes written in the real SUN Attributes and ScenicOrNot formats.

The real datasets cannot be downloaded here, and the paper's claims deserve a test with known
answers. :func:`generate` renders outdoor-like scenes (:mod:`siam.synth._render`) and writes::

    DIR/sun/images.mat                      key images: (N, 1) cell of names 'synth/scene_00000.jpg'
    DIR/sun/images/synth/scene_00000.jpg
    DIR/sun/attributes.mat                  key attributes: (K, 1) cell of names
    DIR/sun/attributeLabels_continuous.mat  key labels_cv: (N, K) float64, fraction of 3 annotators
    DIR/sun/trainval_idx.mat                key sets: (N, 1), 0/1/2 = train/val/test
    DIR/son/votes.tsv                       historical format: ID Lat Lon Average Variance Votes URI
    DIR/son/images/<ID>.jpg
    DIR/son_attributes.csv                  id + attribute names, fraction of 4 annotators
    DIR/truth/meta.json                     attributes, grid, bias, noise_floor_rmse, settings, presence
    DIR/truth/templates.npy                 float32 (K, m, m) planted templates T_i
    DIR/truth/masks/sun/<row>.npz           key masks: bool (K, H, W), visible pixels
    DIR/truth/masks/son/<ID>.npz

Planted score (paper Eq. 1 with known parts): ``y = b + sum_i <T_i, M_i>``, where ``M_i`` is
attribute i's true mask area-pooled over the *full* image to the m x m grid (:func:`pool_to_grid`,
the bins of ``torch.nn.functional.adaptive_avg_pool2d``), so it is aligned with what a model sees
after resizing the whole image to a square. Templates vary only from top to bottom, never left to
right, because training flips images horizontally. Each ScenicOrNot image gets 3..10 integer votes
``clip(round(y + noise * N(0, 1)), 1, 10)``; ``Average`` is their mean and ``Variance`` their
population variance (ddof = 0, as in the historical file: votes 4,5,3,5,1,4,4,5,6 -> 4.1111,
1.8765). The noise floor of a split (and of ``all`` the images) is the RMSE of the clean y against
the written ``Average``: no model can beat it.

Which attributes a scene shows is sampled from a whole real SUN label row (co-occurrence of the
14,340 images, :mod:`siam.synth._sun33`); rows showing rare attributes are drawn more often
(``balance``), so that a few thousand images hold enough railroads and waterfalls to learn from.
Annotators then label what is *visible*: each sees an attribute with a probability growing with its
visible area, and sometimes marks an absent one (at a rate set by how often the real labels hold a
single vote), so labels disagree like the real ones. Everything is drawn from per-image seeds:
the output does not depend on the worker count.

Defaults (:class:`SynthConfig`): 2,000 SUN + 3,000 ScenicOrNot images, 128 x 128 px, grid 8, vote
noise 1.0 (noise floor ~0.45 rating points; clean scores ~4.5 +- 1.2). 128 px square is the ``tiny``
backbone's input, so a model evaluated with resize = crop = 128 sees every pixel unresampled (1-px
wires survive) and each grid cell is exactly 16 x 16 px; a centre crop smaller than the resize would
cut the border cells that the planted score counts. The default attributes leave out the four
without a visual identity of their own (:data:`NOT_DISTINCT`).

    from siam.synth import SynthConfig, generate
    res = generate("/tmp/s", seed=0, config=SynthConfig(n_sun=500, n_son=800), workers=2)
    res.noise_floor_rmse  # {"train": ..., "val": ..., "test": ..., "all": ...}

``decorrelate=True`` (``siam synth --decorrelate``) draws each attribute independently at its
ordinary-world share instead of from a real row: a test world without the training world's
co-occurrence. :func:`render_scene` re-renders any written scene exactly from its seed, optionally
without some attributes (single-deletion interventions with known effects), and
:func:`encode_as_written` encodes it as the written JPEG.
"""

from __future__ import annotations

import functools
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siam.data.splits import scaled_sizes
from siam.errors import ConfigError, DatasetError
from siam.synth._render import NOT_DISTINCT, RENDERED
from siam.synth._render import render_scene as _render
from siam.synth._sun33 import sun33_levels
from siam.vocab import SUN33

__all__ = [
    "DEFAULT_ATTRIBUTES",
    "NOT_DISTINCT",
    "PLANTED",
    "SynthConfig",
    "SynthResult",
    "RenderedScene",
    "generate",
    "render_scene",
    "encode_as_written",
    "planted_templates",
    "pool_to_grid",
]

#: The default attribute set: the SIAM paper's 33 minus those without a visual identity of their
#: own (:data:`NOT_DISTINCT`: aged_worn, dirty, rusty, cluttered_space), in SUN33 column order.
DEFAULT_ATTRIBUTES: tuple[str, ...] = tuple(n for n in SUN33 if n not in NOT_DISTINCT)

#: Planted template laws: attribute -> (tau_top, tau_bottom), in rating points per unit of image
#: area, linear in the row position v (0 = top, 1 = bottom) and constant along each row. An
#: attribute covering a fraction A of the image where tau = t adds t * A to the score; the values
#: were set from the mean visible area of each attribute so that a typical present instance adds
#: about +-0.3..1.5 points and the clean scores spread like real ratings (std ~1.25 around 4.5).
#: Attributes not listed have zero templates (no effect on the score).
PLANTED: dict[str, tuple[float, float]] = {
    # positive everywhere
    "ocean": (7.0, 7.0), "still_water": (14.0, 14.0), "running_water": (20.0, 20.0),
    "ice_snow": (5.0, 5.0), "hiking": (24.0, 24.0), "rugged_scene": (14.0, 14.0),
    "horizon": (12.0, 12.0), "flowers": (8.0, 8.0), "temple": (6.0, 6.0), "trees": (3.0, 3.0),
    # negative everywhere
    "metal": (-24.0, -24.0), "wire": (-40.0, -40.0), "transport": (-21.0, -21.0),
    "digging": (-20.0, -20.0), "railroad": (-10.0, -10.0), "glass": (-8.5, -8.5),
    "social": (-8.0, -8.0), "dry": (-2.0, -2.0),
    "aged_worn": (-3.0, -3.0), "dirty": (-5.0, -5.0), "rusty": (-4.0, -4.0),
    "cluttered_space": (-12.0, -12.0),
    # location-dependent (vertical only)
    "farming": (-10.0, 8.0),  # negative high in the image (far fields), positive low
    "road": (0.0, -6.0),  # harmless far away, ever more negative in the foreground
}

#: Planted intercept b: the clean scores then average ~4.5, about the mean of real ScenicOrNot ratings.
BIAS: float = 4.4
#: Probability that an attribute of the sampled real row is drawn, by its number of real votes.
PRESENCE_BY_VOTES: tuple[float, float, float, float] = (0.0, 0.15, 0.8, 1.0)
SUN_ANNOTATORS = 3
SON_ATTRIBUTE_ANNOTATORS = 4
VOTES_PER_IMAGE: tuple[int, int] = (3, 10)
#: Paper splits: SUN 11,414 / 1,497 / 1,429 (random, in trainval_idx.mat); ScenicOrNot in ID order,
#: 150,000 / 20,000 / 30,000 of the first 200,000, i.e. 75 / 10 / 15 % of a smaller file.
SUN_SPLIT: tuple[int, int, int] = (11_414, 1_497, 1_429)
SON_SPLIT: tuple[int, int, int] = (150_000, 20_000, 30_000)
MAX_SON = 200_000
_MAX_ROW_BOOST = 8.0
_DETECT_MAX = 0.8  # chance an annotator marks a clearly visible attribute
_DETECT_AREA = 0.01  # visible area fraction at which detection reaches 63% of the maximum
_SUN_DIR, _SON_DIR, _TRUTH_DIR, _SON_ATTR = "sun", "son", "truth", "son_attributes.csv"


# ---------------------------------------------------------------------------------------------
# configuration

@dataclass(frozen=True)
class SynthConfig:
    """Generator settings (frozen; rejects bad values with :class:`~siam.errors.ConfigError`).

    n_sun / n_son: number of SUN-format / ScenicOrNot-format images (>= 10 each, so that every
    split is non-empty; n_son <= 200,000). size: (width, height) in pixels, each 32..4096.
    grid: template size m (1..min(size)). noise: standard deviation of one vote around the clean
    score, in rating points (0..5). attributes: names, a subset of the SIAM paper's 33 (label
    column order follows this tuple). n_son_attributes: at most this many ScenicOrNot test images
    get attribute labels in ``son_attributes.csv`` (capped by the test split size). balance:
    exponent (0..2) of the boost given to real rows showing rare attributes (:func:`_row_weights`);
    0 keeps the real marginals, 1 (default) lifts every attribute to >= ~3% of the scenes.
    decorrelate: draw each attribute of a scene independently, at the share of scenes showing it
    in the ordinary world (same ``balance``), instead of from one real row: no co-occurrence of the
    ordinary world survives (a test world that separates true effects from correlated shortcuts).
    """

    n_sun: int = 2000
    n_son: int = 3000
    size: tuple[int, int] = (128, 128)
    grid: int = 8
    noise: float = 1.0
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    n_son_attributes: int = 90
    balance: float = 1.0
    decorrelate: bool = False

    def __post_init__(self) -> None:
        for name, lo, hi in (("n_sun", 10, None), ("n_son", 10, MAX_SON), ("n_son_attributes", 0, None)):
            _check_int(name, getattr(self, name), lo, hi)
        size = self.size
        if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
            raise ConfigError(f"size must be (width, height), got {size!r}")
        for v in size:
            _check_int("size", v, 32, 4096)
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        _check_int("grid", self.grid, 1, min(self.size))
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not (
            math.isfinite(self.noise) and 0 <= self.noise <= 5
        ):
            raise ConfigError(
                f"noise must be a number in [0, 5] (vote std, rating points), got {self.noise!r}"
            )
        object.__setattr__(self, "noise", float(self.noise))
        if isinstance(self.balance, bool) or not isinstance(self.balance, (int, float)) or not (
            0 <= self.balance <= 2
        ):
            raise ConfigError(f"balance must be a number in [0, 2] (0: real marginals), got {self.balance!r}")
        object.__setattr__(self, "balance", float(self.balance))
        if not isinstance(self.decorrelate, (bool, np.bool_)):
            raise ConfigError(f"decorrelate must be true or false, got {self.decorrelate!r}")
        object.__setattr__(self, "decorrelate", bool(self.decorrelate))
        attrs = self.attributes
        if isinstance(attrs, str) or not isinstance(attrs, Iterable):
            raise ConfigError(f"attributes must be a list of names, got {attrs!r}")
        attrs = tuple(attrs)
        if not attrs:
            raise ConfigError("attributes must hold at least one name, got an empty list")
        unknown = [a for a in attrs if a not in RENDERED]
        if unknown:
            raise ConfigError(f"unknown attributes {unknown}; allowed: {list(SUN33)}")
        dups = sorted({a for a in attrs if attrs.count(a) > 1})
        if dups:
            raise ConfigError(f"attributes must be unique, got duplicates {dups}")
        object.__setattr__(self, "attributes", attrs)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["attributes"] = list(self.attributes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SynthConfig:
        """Build from a mapping; unknown keys raise :class:`~siam.errors.ConfigError`."""
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown synth config keys {unknown}; allowed: {allowed}")
        kw = dict(d)
        for key in ("size", "attributes"):
            if key in kw and isinstance(kw[key], list):
                kw[key] = tuple(kw[key])
        return cls(**kw)


def _check_int(name: str, value: object, lo: int, hi: int | None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}")


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate` wrote: the folder, its settings and the noise floor per split."""

    out: Path
    seed: int
    config: SynthConfig
    bias: float
    noise_floor_rmse: dict[str, float]
    seconds: float
    sun_split: dict[str, int] = field(default_factory=dict)
    son_split: dict[str, int] = field(default_factory=dict)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.config.attributes


# ---------------------------------------------------------------------------------------------
# planted truth

def planted_templates(attributes: Sequence[str], grid: int) -> np.ndarray:
    """(K, m, m) float32 planted templates T_i for ``attributes`` on an m x m grid.

    ``T_i[r, c] = tau_i(v_r) / m**2`` with ``v_r = (r + 0.5) / m`` and tau from :data:`PLANTED`,
    so ``<T_i, M_i>`` does not depend on m; every row is constant (no left-right variation).
    """
    _check_int("grid", grid, 1, None)
    v = (np.arange(grid) + 0.5) / grid
    out = np.zeros((len(attributes), grid, grid), np.float64)
    for k, name in enumerate(attributes):
        top, bottom = PLANTED.get(name, (0.0, 0.0))
        out[k] = (top + (bottom - top) * v)[:, None] / grid**2
    return out.astype(np.float32)


def pool_to_grid(masks: np.ndarray, grid: int) -> np.ndarray:
    """(K, H, W) masks -> (K, m, m) float64 area averages over the full image.

    Bin i covers rows ``floor(i*H/m)`` to ``ceil((i+1)*H/m)`` (and likewise columns): exactly the
    bins of ``torch.nn.functional.adaptive_avg_pool2d``; with m dividing H and W each bin is a block.
    """
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {m.shape}")
    _check_int("grid", grid, 1, min(m.shape[1:]))
    rows, cols = _bins(m.shape[1], grid), _bins(m.shape[2], grid)  # (m, H), (m, W) 0/1
    counts = rows @ m.astype(np.float32) @ cols.T  # (K, m, m) exact integer sums
    area = rows.sum(1, dtype=np.float64)[:, None] * cols.sum(1, dtype=np.float64)[None, :]
    return counts.astype(np.float64) / area


def _bins(n: int, grid: int) -> np.ndarray:
    """(grid, n) float32 indicator of the adaptive-pooling bins along one axis."""
    i = np.arange(grid)[:, None]
    lo, hi = (i * n) // grid, -((-(i + 1) * n) // grid)
    j = np.arange(n)[None, :]
    return ((j >= lo) & (j < hi)).astype(np.float32)


def _save_masks(path: Path, masks: np.ndarray) -> None:
    """``np.savez_compressed(path, masks=masks)``, but fast (deflate level 1) and byte-stable."""
    info = zipfile.ZipInfo("masks.npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(masks), allow_pickle=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(info, buf.getvalue(), compresslevel=1)


def _split_sizes(n: int, paper: tuple[int, int, int]) -> dict[str, int]:
    """Split sizes with the paper's proportions, rounded exactly as the project's loaders do."""
    return dict(zip(("train", "val", "test"), scaled_sizes(n, paper)))


def _template_kind(name: str) -> str:
    top, bottom = PLANTED.get(name, (0.0, 0.0))
    if top == bottom:
        return "zero" if top == 0 else ("positive" if top > 0 else "negative")
    return "vertical"


# ---------------------------------------------------------------------------------------------
# per-image work (runs in worker processes)

_STATE: dict[str, Any] | None = None


def _init_worker(state: dict[str, Any] | None) -> None:
    global _STATE
    _STATE = state


def _annotate(rng: np.random.Generator, area: np.ndarray, false_rate: np.ndarray, n: int) -> np.ndarray:
    """(K,) how many of ``n`` annotators mark each attribute, given its visible area fraction."""
    p = np.where(area > 0, _DETECT_MAX * (1 - np.exp(-area / _DETECT_AREA)), false_rate)
    return rng.binomial(n, p)


def _sample_present(rng: np.random.Generator, s: Mapping[str, Any]) -> list[str]:
    """The attributes a scene shows: from one drawn real SUN row (co-occurrence kept), or, in a
    decorrelated world, each attribute independently at its marginal rate of the ordinary world."""
    if s["decorrelate"]:
        return [n for n, p in zip(s["attributes"], s["marginal"]) if rng.random() < p]
    row = min(int(np.searchsorted(s["row_cdf"], rng.random(), side="right")), len(s["levels"]) - 1)
    levels = s["levels"][row]  # one real SUN row (K,)
    return [n for n, lv in zip(s["attributes"], levels) if rng.random() < PRESENCE_BY_VOTES[lv]]


def _draw(
    s: Mapping[str, Any], part: str, index: int, hidden: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, int, list[str], np.random.Generator, np.random.Generator]:
    """One scene from its seed: (image (H, W, 3) uint8 before encoding, masks (K, H, W), JPEG
    quality, attributes drawn, label rng, vote rng). ``hidden``: see :func:`render_scene`."""
    seeds = np.random.SeedSequence([s["seed"], 0 if part == "sun" else 1, index]).spawn(3)
    r_scene, r_label, r_vote = (np.random.default_rng(x) for x in seeds)
    present = _sample_present(r_scene, s)
    image, masks = _render(
        r_scene, present, s["attributes"], height=s["height"], width=s["width"], hidden=hidden
    )
    quality = int(r_scene.integers(60, 96))
    return image, masks, quality, present, r_label, r_vote


def _clean_score(s: Mapping[str, Any], masks: np.ndarray) -> float:
    """y = b + sum_i <T_i, pool(M_i)> of one scene's masks (K, H, W)."""
    return s["bias"] + float(np.sum(s["templates"] * pool_to_grid(masks, s["grid"])))


def _encode(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _render_task(task: tuple[str, int, str]) -> dict[str, Any]:
    """Render, label and (for ScenicOrNot) score one image; writes its JPEG and mask file."""
    s = _STATE
    if s is None:
        raise RuntimeError("synth worker used before _init_worker")
    part, index, key = task
    image, masks, quality, _, r_label, r_vote = _draw(s, part, index)
    out = Path(s["out"])
    if part == "sun":
        img_path = out / _SUN_DIR / "images" / key
        mask_path = out / _TRUTH_DIR / "masks" / "sun" / f"{index}.npz"
    else:
        img_path = out / _SON_DIR / "images" / f"{key}.jpg"
        mask_path = out / _TRUTH_DIR / "masks" / "son" / f"{key}.npz"
    img_path.write_bytes(_encode(image, quality))
    _save_masks(mask_path, masks)
    area = masks.mean(axis=(1, 2))
    rec: dict[str, Any] = {"part": part, "index": index}
    if part == "sun":
        rec["labels"] = _annotate(r_label, area, s["false_rate"], SUN_ANNOTATORS)
        return rec
    rec["labels"] = _annotate(r_label, area, s["false_rate"], SON_ATTRIBUTE_ANNOTATORS)
    y = _clean_score(s, masks)
    n_votes = int(r_vote.integers(VOTES_PER_IMAGE[0], VOTES_PER_IMAGE[1] + 1))
    votes = np.clip(np.rint(y + s["noise"] * r_vote.standard_normal(n_votes)), 1, 10).astype(int)
    rec.update(y=y, votes=votes.tolist())
    return rec


# ---------------------------------------------------------------------------------------------
# orchestration

_OUTPUTS = (_SUN_DIR, _SON_DIR, _TRUTH_DIR, _SON_ATTR)


def _written_by_synth(out: Path) -> bool:
    """True when ``out`` holds a (possibly interrupted) earlier ``siam synth`` output."""
    try:
        meta = json.loads((out / _TRUTH_DIR / "meta.json").read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("generator") == "siam synth":
            return True
    except (OSError, ValueError):
        pass
    return (out / _TRUTH_DIR / "masks" / "sun").is_dir() and (out / _SUN_DIR / "images" / "synth").is_dir()


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Check that ``out`` may be written (see :func:`generate`) and create its folders."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder (empty or new)")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            raise ConfigError(
                f"--out {str(out)!r} is not empty ({len(entries)} entries, e.g. {entries[:3]}); choose "
                f"an empty or new folder, or pass --overwrite to replace an earlier siam synth output"
            )
        ours = [n for n in _OUTPUTS if (out / n).exists()]
        if ours and not _written_by_synth(out):
            raise ConfigError(
                f"--out {str(out)!r} holds {ours}, which siam synth did not write (no "
                f"{_TRUTH_DIR}/meta.json from siam synth); refusing to delete them, choose another folder"
            )
        for name in ours:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
    for sub in (
        Path(_SUN_DIR) / "images" / "synth", Path(_SON_DIR) / "images",
        Path(_TRUTH_DIR) / "masks" / "sun", Path(_TRUTH_DIR) / "masks" / "son",
    ):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _state(seed: int, cfg: SynthConfig, out: Path | None) -> dict[str, Any]:
    """Everything a worker needs to draw any scene of the world (``seed``, ``cfg``) from its seed."""
    names = cfg.attributes
    levels = np.ascontiguousarray(sun33_levels()[:, [SUN33.index(n) for n in names]])
    weights = _row_weights(levels, cfg.balance)
    return {
        "seed": seed, "out": None if out is None else str(out), "attributes": list(names), "levels": levels,
        "row_cdf": np.cumsum(weights), "decorrelate": cfg.decorrelate,
        "marginal": weights @ np.asarray(PRESENCE_BY_VOTES)[levels],  # (K,) share of scenes showing each
        "false_rate": _false_rates(levels), "templates": planted_templates(names, cfg.grid).astype(np.float64),
        "bias": BIAS, "noise": cfg.noise, "grid": cfg.grid, "height": cfg.height, "width": cfg.width,
    }


def _son_ids(id_rng: np.random.Generator, n: int) -> list[int]:
    """The ScenicOrNot IDs of a world: increasing, with gaps (the first draws of ``id_rng``)."""
    return np.cumsum(id_rng.integers(1, 4, n)).tolist()


def _row_weights(levels: np.ndarray, balance: float) -> np.ndarray:
    """(N,) probabilities of drawing each real row: rows showing a rare attribute come more often.

    A row's weight is ``min(8, (median prevalence / prevalence of its rarest attribute) ** balance)``
    (1 for rows with no majority-voted attribute), prevalence being the expected share of scenes
    showing the attribute. Whole rows are drawn, so co-occurrence within a scene stays real.
    """
    prevalence = np.maximum(np.asarray(PRESENCE_BY_VOTES)[levels].mean(axis=0), 1e-6)  # (K,)
    boost = np.clip((np.median(prevalence) / prevalence) ** balance, 1.0, _MAX_ROW_BOOST)
    w = np.max(np.where(levels >= 2, boost[None, :], 1.0), axis=1)
    return w / w.sum()


def _false_rates(levels: np.ndarray) -> np.ndarray:
    """(K,) per-annotator rate of marking an absent attribute, from the real single-vote rate."""
    return np.clip(0.4 * (levels == 1).mean(axis=0), 0.003, 0.08)


def _run_tasks(
    tasks: list[tuple[str, int, str]], state: dict[str, Any], workers: int, progress: bool
) -> list[dict[str, Any]]:
    from siam.progress import progress as progress_counter  # a bar on a terminal, lines in a log

    bar = progress_counter(total=len(tasks), desc="siam synth", unit="img", enabled=progress)
    results: list[dict[str, Any]] = []
    try:
        if workers <= 1:
            _init_worker(state)
            for t in tasks:
                results.append(_render_task(t))
                bar.update()
        else:
            method = "fork" if sys.platform.startswith("linux") else "spawn"  # fork: no re-import
            with mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(state,)) as pool:
                for rec in pool.imap(_render_task, tasks, chunksize=8):
                    results.append(rec)
                    bar.update()
    finally:
        bar.close()
        _init_worker(None)
    return results


def _vote_stats(votes: Sequence[int]) -> tuple[str, str]:
    """(Average, Variance) as votes.tsv writes them: the mean and the *population* variance
    (ddof = 0) of the ratings, 4 decimals -- as in the historical ScenicOrNot file."""
    v = np.asarray(votes, dtype=np.float64)
    return f"{v.mean():.4f}", f"{v.var():.4f}"


def _cell_array(names: Sequence[str]) -> np.ndarray:
    """A MATLAB (N, 1) cell array of strings, as scipy.io.savemat writes object arrays."""
    return np.array([[n] for n in names], dtype=object)


def _write_sun(
    sun_dir: Path, image_names: Sequence[str], attributes: Sequence[str], counts: Sequence[np.ndarray],
    *, seed: int,
) -> dict[str, int]:
    """The four SUN Attributes .mat files; returns the split sizes of trainval_idx.mat."""
    import scipy.io

    n = len(image_names)
    labels = np.stack(counts).astype(np.float64) / SUN_ANNOTATORS  # (N, K) fraction of annotators
    sizes = _split_sizes(n, SUN_SPLIT)
    perm = np.random.default_rng(np.random.SeedSequence([seed, 3])).permutation(n)
    sets = np.zeros((n, 1), np.float64)  # (N, 1) as MATLAB writes a column of doubles
    sets[perm[sizes["train"]: sizes["train"] + sizes["val"]]] = 1
    sets[perm[sizes["train"] + sizes["val"]:]] = 2
    scipy.io.savemat(sun_dir / "images.mat", {"images": _cell_array(image_names)})
    scipy.io.savemat(sun_dir / "attributes.mat", {"attributes": _cell_array(attributes)})
    scipy.io.savemat(sun_dir / "attributeLabels_continuous.mat", {"labels_cv": labels})
    scipy.io.savemat(sun_dir / "trainval_idx.mat", {"sets": sets})
    return sizes


def _write_votes(
    path: Path, ids: Sequence[int], lat: np.ndarray, lon: np.ndarray, votes: Sequence[Sequence[int]]
) -> np.ndarray:
    """votes.tsv in the historical format, rows in ID order; returns the Averages as written.

    As in the real file (ID 1 is photo 7), the Geograph photo number in the URI is not the ID:
    it is ``6 * ID + 1``; the images stay ``<ID>.jpg``, the historical format's key.
    """
    lines = ["ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI"]
    averages = []
    for sid, la, lo, v in zip(ids, lat, lon, votes):
        avg, var = _vote_stats(v)
        averages.append(float(avg))
        uri = f"http://www.geograph.org.uk/photo/{6 * int(sid) + 1}"
        lines.append(f"{sid}\t{la:.6g}\t{lo:.6g}\t{avg}\t{var}\t{','.join(map(str, v))}\t{uri}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return np.asarray(averages)


def generate(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    config: SynthConfig | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> SynthResult:
    """Render the planted-truth dataset into ``out`` (layout in the module docstring).

    The same ``seed`` and ``config`` give identical images, labels, votes and masks whatever
    ``workers`` is. ``out`` must be empty or new; ``overwrite`` allows a non-empty folder and
    replaces an earlier ``siam synth`` output there (sun/, son/, truth/, son_attributes.csv; other
    files are kept), but never deletes such paths that siam synth did not write.
    ``truth/meta.json`` is written last: its presence marks a complete output.
    """
    t0 = time.perf_counter()
    cfg = config if config is not None else SynthConfig()
    if not isinstance(cfg, SynthConfig):
        raise ConfigError(f"config must be a SynthConfig, got {type(cfg).__name__}")
    _check_int("seed", seed, 0, 2**63 - 1)
    _check_int("workers", workers, 1, 64)
    out = Path(out)
    _prepare_out(out, overwrite)

    names = cfg.attributes
    state = _state(seed, cfg, out)
    templates = planted_templates(names, cfg.grid)
    width = max(5, len(str(cfg.n_sun - 1)))
    sun_names = [f"synth/scene_{i:0{width}d}.jpg" for i in range(cfg.n_sun)]
    id_rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    son_ids = _son_ids(id_rng, cfg.n_son)
    lat = id_rng.uniform(50.0, 58.6, cfg.n_son)
    lon = id_rng.uniform(-5.7, 1.7, cfg.n_son)

    tasks = [("sun", i, n) for i, n in enumerate(sun_names)]
    tasks += [("son", i, str(j)) for i, j in enumerate(son_ids)]
    results = _run_tasks(tasks, state, workers, progress)
    sun = [r for r in results if r["part"] == "sun"]
    son = [r for r in results if r["part"] == "son"]
    sizes = _write_sun(out / _SUN_DIR, sun_names, names, [r["labels"] for r in sun], seed=seed)
    averages = _write_votes(out / _SON_DIR / "votes.tsv", son_ids, lat, lon, [r["votes"] for r in son])
    clean = np.array([r["y"] for r in son])
    son_sizes = _split_sizes(cfg.n_son, SON_SPLIT)
    bounds = np.cumsum([0, son_sizes["train"], son_sizes["val"], son_sizes["test"]])
    floor = {
        split: float(np.sqrt(np.mean((clean[a:b] - averages[a:b]) ** 2)))
        for split, a, b in zip(("train", "val", "test"), bounds[:-1], bounds[1:])
    }
    floor["all"] = float(np.sqrt(np.mean((clean - averages) ** 2)))  # every SoN image (split="all")

    # SoN attribute set (evaluation only): a random subset of the test IDs, in ID order
    test_idx = np.arange(bounds[2], bounds[3])
    n_attr = min(cfg.n_son_attributes, len(test_idx))
    pick_rng = np.random.default_rng(np.random.SeedSequence([seed, 4]))
    pick = np.sort(pick_rng.choice(test_idx, n_attr, replace=False))
    rows = [",".join(["id", *names])]
    for i in pick:
        fr = son[i]["labels"] / SON_ATTRIBUTE_ANNOTATORS
        rows.append(",".join([str(son_ids[i]), *(f"{x:g}" for x in fr)]))
    (out / _SON_ATTR).write_text("\n".join(rows) + "\n", encoding="utf-8", newline="\n")

    truth = out / _TRUTH_DIR
    np.save(truth / "templates.npy", templates)
    meta = {
        "generator": "siam synth",
        "attributes": list(names),
        "grid": cfg.grid,
        "bias": BIAS,
        "noise_floor_rmse": floor,
        "seed": seed,
        "settings": cfg.to_dict(),
        "image_size": {"width": cfg.width, "height": cfg.height},
        "score": "y = bias + sum_i <T_i, M_i>; M_i = mask i area-pooled over the full image to the "
        "grid (adaptive_avg_pool2d bins); votes = clip(round(y + noise * N(0,1)), 1, 10)",
        "noise": {
            "vote_std": cfg.noise, "votes_per_image": list(VOTES_PER_IMAGE), "variance": "population (ddof=0)"
        },
        "templates": {
            n: dict(zip(("kind", "tau_top", "tau_bottom"), (_template_kind(n), *PLANTED.get(n, (0.0, 0.0)))))
            for n in names
        },
        "template_units": "T[r, c] = tau(v_r) / grid**2, tau linear in v = (r + 0.5) / grid "
        "from tau_top to tau_bottom",
        "sun_split": sizes,
        "son_split": {**son_sizes, "rule": "consecutive blocks in ID order, 75/10/15 % (val, test rounded)"},
        "son_attributes": {"n": int(n_attr), "annotators": SON_ATTRIBUTE_ANNOTATORS},
        "sun_annotators": SUN_ANNOTATORS,
        "presence_by_real_votes": list(PRESENCE_BY_VOTES),
        "row_weighting": {"balance": cfg.balance, "max_boost": _MAX_ROW_BOOST},
        "presence": {
            "decorrelate": cfg.decorrelate,
            "rule": "each attribute independently at its ordinary-world share" if cfg.decorrelate
            else "one real SUN row per scene (co-occurrence kept), weighted by row_weighting",
            "share": {n: float(p) for n, p in zip(names, state["marginal"])},
        },
        "not_distinct": {n: r for n, r in NOT_DISTINCT.items()},
    }
    (truth / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return SynthResult(
        out=out, seed=seed, config=cfg, bias=BIAS, noise_floor_rmse=floor,
        seconds=time.perf_counter() - t0, sun_split=sizes, son_split=son_sizes,
    )


# ---------------------------------------------------------------------------------------------
# re-rendering one scene (exactly, or without some attributes)

@dataclass(frozen=True)
class RenderedScene:
    """One scene of a ``siam synth`` folder, re-rendered from its seed by :func:`render_scene`.

    image: (H, W, 3) uint8, the pixels before JPEG encoding (:func:`encode_as_written` encodes them
    as generate() did). masks: (K, H, W) bool visible pixels per attribute. clean_score: the planted
    y = b + sum_i <T_i, pool(M_i)> of these masks. attributes: the K names. quality: the scene's
    JPEG quality. drawn: the attributes the scene was drawn with; without: those left out.
    """

    image: np.ndarray
    masks: np.ndarray
    clean_score: float
    attributes: tuple[str, ...]
    quality: int
    drawn: tuple[str, ...] = ()
    without: tuple[str, ...] = ()


@functools.lru_cache(maxsize=8)
def _world(root: str, stamp: int) -> tuple[dict[str, Any], dict[str, int], int]:
    """(draw state, SoN ID -> index, n_sun) of the folder ``root`` (``stamp``: meta.json's mtime)."""
    meta_p = Path(root) / _TRUTH_DIR / "meta.json"
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{meta_p}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("generator") != "siam synth" or "settings" not in meta:
        raise DatasetError(
            f"{meta_p} was not written by siam synth (no generator/settings): only a siam synth world "
            f"can be re-rendered from its seeds"
        )
    cfg = SynthConfig.from_dict(meta["settings"])
    seed = int(meta["seed"])
    ids = _son_ids(np.random.default_rng(np.random.SeedSequence([seed, 2])), cfg.n_son)
    return _state(seed, cfg, None), {str(i): k for k, i in enumerate(ids)}, cfg.n_sun


def render_scene(
    root: str | os.PathLike[str], source: str, ident: str | int, *, without: str | Sequence[str] = ()
) -> RenderedScene:
    """Re-render one scene of the folder ``root`` written by ``siam synth``, exactly, from its seed.

    ``source``: ``"son"`` (``ident`` = the ScenicOrNot ID, as in votes.tsv and truth/masks/son) or
    ``"sun"`` (``ident`` = the row in images.mat, as in truth/masks/sun). ``without``: attribute
    name(s) not drawn; everything else is drawn identically (same random draws), so the image
    differs from the original only where those attributes were visible (exactly, before encoding:
    drawing has no anti-aliasing) and shows what was behind them. Removing an attribute can reveal
    others it covered, so their masks grow and the clean score is the original minus
    <T_i, pool(M_i)> only when no other mask changed. Overlays (aged_worn, dirty, rusty; not in the
    default set) read the pixels below them and may change too.
    """
    meta_p = Path(root) / _TRUTH_DIR / "meta.json"
    if not meta_p.is_file():
        raise DatasetError(f"cannot re-render: {meta_p} is missing (expected a folder written by siam synth)")
    state, son_index, n_sun = _world(str(Path(root).resolve()), meta_p.stat().st_mtime_ns)
    names = tuple(state["attributes"])
    hide = (without,) if isinstance(without, str) else tuple(without)
    unknown = [n for n in hide if n not in names]
    if unknown:
        raise DatasetError(f"without: unknown attributes {unknown}; allowed: {list(names)}")
    if source == "son":
        if str(ident) not in son_index:
            raise DatasetError(f"no ScenicOrNot image with ID {ident!r} in {root} ({len(son_index)} IDs)")
        index = son_index[str(ident)]
    elif source == "sun":
        index = int(ident) if str(ident).isdigit() else -1
        if not 0 <= index < n_sun:
            raise DatasetError(f"SUN ident must be a row index in [0, {n_sun}), got {ident!r}")
    else:
        raise DatasetError(f"source must be 'son' or 'sun', got {source!r}")
    image, masks, quality, drawn, _, _ = _draw(state, source, index, hide)
    return RenderedScene(
        image=image, masks=masks, clean_score=_clean_score(state, masks), attributes=names,
        quality=quality, drawn=tuple(drawn), without=hide,
    )


def encode_as_written(image: np.ndarray | RenderedScene, *, quality: int | None = None) -> bytes:
    """JPEG bytes exactly as :func:`generate` writes an image: give a :class:`RenderedScene` (its
    own quality) or a (H, W, 3) uint8 array with the scene's ``quality`` (60..95)."""
    if isinstance(image, RenderedScene):
        quality = image.quality if quality is None else quality
        image = image.image
    if quality is None:
        raise ConfigError("encode_as_written: pass quality= (RenderedScene.quality) with a bare array")
    _check_int("quality", quality, 1, 95)
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ConfigError(f"encode_as_written needs a (H, W, 3) uint8 image, got {arr.dtype} {arr.shape}")
    return _encode(arr, int(quality))
