"""(1) Data pipeline, images/s per core on 640x480 JPEGs: ours vs the authors' skimage pipeline.

The authors' pipeline (faithful re-implementation): ``skimage.io.imread``, ``skimage.transform.
resize`` to 500x500 (float64, anti_aliasing), ``skimage.transform.rotate`` by up to 5 degrees,
a random 450 crop, a random horizontal flip, then a float tensor. Ours: :func:`siam.data.images.
load_image` (safe decode, EXIF) + :func:`siam.data.transforms.train_transform` (resize, rotation,
crop and flip in one resampling from the decoded pixels). Also reported: the evaluation transform
(what ``siam score`` runs) and how far the fused geometry is from the two-step pipeline it replaced
(resize to 500, then warp). One thread, one process: images/s = images/s/core.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import PhotoSet, Result, at_least, interleaved_best


def authors_pipeline(path: Path, rng: random.Random) -> torch.Tensor:
    from skimage import io, transform

    image = io.imread(path)  # (H, W, 3) uint8
    image = transform.resize(image, (500, 500), anti_aliasing=True)  # float64 in [0, 1]
    image = transform.rotate(image, rng.uniform(-5.0, 5.0))  # float64, bilinear
    top, left = rng.randint(0, 50), rng.randint(0, 50)
    image = image[top : top + 450, left : left + 450]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()  # (3, 450, 450)


def run(quick: bool = False) -> list[Result]:
    from siam.data.images import load_image
    from siam.data.transforms import Preprocessing, eval_transform, train_transform

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pre = Preprocessing()  # the paper's 500 / 450
    train, evaluate = train_transform(pre), eval_transform(pre)
    rng = random.Random(0)
    out: list[Result] = []
    with PhotoSet() as paths:
        n = len(paths)

        def authors() -> None:
            for p in paths:
                authors_pipeline(p, rng)

        def ours_train() -> None:
            for p in paths:
                train(load_image(p))

        def ours_eval() -> None:
            for p in paths:
                evaluate(load_image(p))

        times = interleaved_best({"authors": authors, "train": ours_train, "eval": ours_eval},
                                 repeats=3 if quick else 5)
        t_authors, t_train, t_eval = (times.wall[k] for k in ("authors", "train", "eval"))
        c = times.cpu
        out.append(Result("data", "authors' skimage pipeline", n / t_authors, "img/s/core"))
        out.append(Result("data", "ours: load_image + train_transform", n / t_train, "img/s/core"))
        out.append(Result("data", "ours: load_image + eval_transform", n / t_eval, "img/s/core"))
        goal, ok = at_least(t_authors / t_train, 10)
        out.append(Result("data", "train pipeline speed-up vs authors", t_authors / t_train, "x", goal, ok,
                          note=f"CPU-time ratio {c['authors'] / c['train']:.1f}"))
        diff, shifted = _two_step_difference(pre, paths)
        out.append(Result("data", "train_transform vs two-step resize-then-warp: mean abs diff", diff, "",
                          note=f"normalised units; the two-step output shifted by 1 px: {shifted:.3g}"))
    torch.set_num_threads(threads)
    return out


def _two_step(image: torch.Tensor, pre, params) -> torch.Tensor:
    """The previous pipeline: antialiased uint8 resize to ``pre.resize``, then the same warp."""
    from siam.data.transforms import train_transform
    from torchvision.transforms.v2 import functional as tvf

    resized = tvf.resize(image, [pre.resize, pre.resize], antialias=True)  # (3, R, R) uint8
    return train_transform(pre).apply(resized, params)


def _two_step_difference(pre, paths: list[Path]) -> tuple[float, float]:
    """Mean |train_transform - two-step| (away from the border) over the photos and a few draws,
    and the same for the two-step output moved by one pixel (the scale of a geometry error): the
    fused single resampling differs only by the skipped intermediate resampling."""
    from siam.data.images import load_image
    from siam.data.transforms import TrainParams, to_uint8_tensor, train_transform

    fused = train_transform(pre)
    draws = (TrainParams(3.3, 5, 40, True), TrainParams(-4.9, 25, 10, False))
    diffs, shifted = [], []
    for p in paths:
        image = to_uint8_tensor(load_image(p))
        for params in draws:
            ours = fused.apply(image, params)[:, 4:-4, 4:-4]
            diffs.append(float((ours - _two_step(image, pre, params)[:, 4:-4, 4:-4]).abs().mean()))
            moved = _two_step(image, pre, params._replace(left=params.left + 1))[:, 4:-4, 4:-4]
            shifted.append(float((ours - moved).abs().mean()))
    return float(np.mean(diffs)), float(np.mean(shifted))
