"""(1) Data pipeline, images/s per core on 640x480 JPEGs: ours vs the authors' skimage pipeline.

The authors' pipeline (faithful re-implementation): ``skimage.io.imread``, ``skimage.transform.
resize`` to 500x500 (float64, anti_aliasing), ``skimage.transform.rotate`` by up to 5 degrees,
a random 450 crop, a random horizontal flip, then a float tensor. Ours: :func:`siam.data.images.
load_image` (safe decode, EXIF) + :func:`siam.data.transforms.train_transform`. Also reported: the
evaluation transform (what ``siam score`` runs) and the fused single-resampling proposal in
:mod:`siam.data._fast_affine`. One thread, one process: images/s = images/s/core.
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

        from siam.data._fast_affine import fast_train_transform

        fast = fast_train_transform(pre)

        def ours_fast() -> None:
            for p in paths:
                fast(load_image(p))

        times = interleaved_best({"authors": authors, "train": ours_train, "eval": ours_eval, "fast": ours_fast},
                                 repeats=3 if quick else 5)
        t_authors, t_train, t_eval, t_fast = (times.wall[k] for k in ("authors", "train", "eval", "fast"))
        c = times.cpu
        out.append(Result("data", "authors' skimage pipeline", n / t_authors, "img/s/core"))
        out.append(Result("data", "ours: load_image + train_transform", n / t_train, "img/s/core"))
        out.append(Result("data", "ours: load_image + eval_transform", n / t_eval, "img/s/core"))
        goal, ok = at_least(t_authors / t_train, 10)
        out.append(Result("data", "train pipeline speed-up vs authors", t_authors / t_train, "x", goal, ok,
                          note=f"CPU-time ratio {c['authors'] / c['train']:.1f}"))
        out.append(Result("data", "proposal: load_image + fused affine (_fast_affine)", n / t_fast, "img/s/core"))
        goal, ok = at_least(t_authors / t_fast, 10)
        out.append(Result("data", "fused-affine speed-up vs authors", t_authors / t_fast, "x", goal, ok,
                          note=f"CPU-time ratio {c['authors'] / c['fast']:.1f}"))
        out.append(Result("data", "fused vs current train_transform", t_train / t_fast, "x"))
        out.append(Result("data", "fused vs current: same geometry (max abs diff, 500 px source)",
                          _geometry_difference(pre), "", note="normalised units; float rounding only"))
    torch.set_num_threads(threads)
    return out


def _geometry_difference(pre) -> float:
    """Max |current - fused| over a few parameter draws on a source already ``resize`` square,
    where the current pipeline's resize is the identity: equal geometry gives float rounding."""
    from siam.data._fast_affine import fast_train_transform
    from siam.data.transforms import TrainParams, train_transform

    gen = np.random.default_rng(0)
    image = gen.integers(0, 256, (pre.resize, pre.resize, 3), dtype=np.uint8)
    current, fused = train_transform(pre), fast_train_transform(pre)
    worst = 0.0
    for params in (TrainParams(0.0, 10, 20, False), TrainParams(3.3, 5, 40, True), TrainParams(-4.9, 50, 0, False)):
        worst = max(worst, float((current.apply(image, params) - fused.apply(image, params)).abs().max()))
    return worst
