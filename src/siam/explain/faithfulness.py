"""Faithfulness of explanations, measured: deletion and insertion benchmarks for regression.

The m x m grid of SIAM's maps splits the model input into cells. Each method ranks the cells;
then, in ``steps`` equal steps, the top-ranked cells are

* **deleted** (replaced by ``fill``) from the image: an explanation that finds what matters moves
  the score early, so a *higher* area under ``|score - original score|`` is better;
* **inserted** into an all-``fill`` image: the score should come back early, so a *lower* area
  under ``|score - original score|`` is better.

Regression scores can move both ways, so the curves track the absolute change. Methods:

* ``siam``: |total contribution map| (sum_i E_i * A_i, Sec. 3.2), scored by SIAM;
* ``siam_random``: a random cell order (seeded), scored by SIAM;
* ``baseline_gradcam``: Grad-CAM (the ``grad-cam`` package, ``pytorch_grad_cam.GradCAM``) of the
  baseline's scalar score at its last feature layer, averaged per cell, scored by the baseline;
* ``baseline_cam_abs``: |CAM - b| of the baseline (its own signed evidence; Grad-CAM's ReLU keeps
  only the evidence that raises the score), scored by the baseline;
* ``baseline_random``: a random order, scored by the baseline.

``fill="grey"`` replaces cells with 0 in normalised space (the data-set mean colour);
``fill="blur"`` with a Gaussian-blurred copy of the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siam.models.baseline import Baseline
from siam.models.siam import SIAM, check_image_batch

__all__ = ["faithfulness", "gradcam_maps", "BENCHMARKS"]

Fill = Literal["grey", "blur"]
BENCHMARKS: tuple[str, ...] = ("deletion", "insertion")
HIGHER_IS_BETTER: dict[str, bool] = {"deletion": True, "insertion": False}


class _ScoreModule(nn.Module):
    """The baseline as a plain module returning its score as (B, 1), for ``pytorch_grad_cam``."""

    def __init__(self, baseline: Baseline) -> None:
        super().__init__()
        self.baseline = baseline

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.baseline(x).score[:, None]  # (B, 1)


class _ScoreTarget:
    """Grad-CAM target for regression: the scalar score itself (one sample's (1,) output)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., 0]


def gradcam_maps(baseline: Baseline, images: torch.Tensor, *, batch_size: int = 16) -> np.ndarray:
    """(N, H, W) Grad-CAM of the baseline's score (``pytorch_grad_cam.GradCAM``), each in [0, 1].

    Target layer: the backbone output (the last convolutional features, as in Grad-CAM).
    """
    from pytorch_grad_cam import GradCAM

    check_image_batch(images)
    was_training = baseline.training
    wrapper = _ScoreModule(baseline)
    out = []
    try:
        with torch.enable_grad(), GradCAM(model=wrapper, target_layers=[baseline.backbone]) as cam:
            for chunk in images.split(batch_size):
                out.append(cam(input_tensor=chunk, targets=[_ScoreTarget()] * len(chunk)))
    finally:
        baseline.train(was_training)
    return np.concatenate(out, 0)  # (N, H, W)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _scores(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = _device(model)
    return torch.cat([model(c.to(dev)).score.float().cpu() for c in x.split(batch_size)])  # (N,)


def _cell_ranking(importance: torch.Tensor) -> torch.Tensor:
    """importance (N, m, m) -> (N, m*m) cell indices, most important first (stable)."""
    flat = importance.reshape(importance.shape[0], -1)
    return torch.argsort(-flat, dim=1, stable=True)


def _masks(order: torch.Tensor, count: int, grid: int, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W) 1 on the first ``count`` cells of each image's order, upsampled (nearest)."""
    n = order.shape[0]
    cells = torch.zeros(n, grid * grid)
    if count > 0:
        cells.scatter_(1, order[:, :count], 1.0)
    return F.interpolate(cells.reshape(n, 1, grid, grid), size=size, mode="nearest")


def _fill_image(images: torch.Tensor, fill: Fill) -> torch.Tensor:
    if fill == "grey":
        return torch.zeros_like(images)
    if fill == "blur":
        from torchvision.transforms.v2.functional import gaussian_blur

        side = min(images.shape[-2:])
        sigma = max(side / 16.0, 1.0)
        kernel = int(2 * round(3 * sigma) + 1)
        return gaussian_blur(images, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    raise ValueError(f"fill must be 'grey' or 'blur', got {fill!r}")


def _auc(curve: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoidal area over the deleted fraction, along the last axis."""
    return np.trapezoid(curve, fractions, axis=-1)


def _curves(
    model: nn.Module,
    images: torch.Tensor,
    filled: torch.Tensor,
    order: torch.Tensor,
    *,
    grid: int,
    steps: int,
    benchmark: str,
    batch_size: int,
) -> np.ndarray:
    """(N, steps + 1) |score - original score| as cells are deleted/inserted in ``order``."""
    size = (images.shape[-2], images.shape[-1])
    original = _scores(model, images, batch_size)  # (N,)
    rows = []
    for s in range(steps + 1):
        count = round(s * grid * grid / steps)
        m = _masks(order, count, grid, size)  # (N, 1, H, W)
        if benchmark == "deletion":
            x = images * (1 - m) + filled * m
        else:
            x = filled * (1 - m) + images * m
        rows.append((_scores(model, x, batch_size) - original).abs())
    return torch.stack(rows, 1).double().numpy()  # (N, steps + 1)


def faithfulness(
    siam_model: SIAM,
    images: torch.Tensor,
    *,
    baseline: Baseline | None = None,
    steps: int = 10,
    seed: int = 0,
    fill: Fill = "grey",
    benchmarks: Sequence[str] = BENCHMARKS,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Deletion/insertion curves and AUCs on preprocessed ``images`` (N, 3, H, W).

    Returns a JSON-serialisable dict: ``fractions`` (steps + 1,) of cells changed; per benchmark
    ``curves[method]`` (mean over images), ``auc[method]``, ``per_image_auc[method]`` (N,),
    ``auc_vs_random[method]`` (AUC / AUC of the same model's random order); ``higher_is_better``.
    Methods: see the module docstring (baseline ones only when ``baseline`` is given).
    """
    if not isinstance(siam_model, SIAM):
        raise ValueError(f"siam_model must be a SIAM model, got {type(siam_model).__name__}")
    if baseline is not None and not isinstance(baseline, Baseline):
        raise ValueError(f"baseline must be a Baseline model or None, got {type(baseline).__name__}")
    check_image_batch(images)
    if images.shape[0] == 0:
        raise ValueError("images is empty: need at least one image")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise ValueError(f"benchmarks must be a non-empty subset of {list(BENCHMARKS)}, got {list(benchmarks)}")
    images = images.detach().float().cpu()
    n, m = images.shape[0], siam_model.config.grid
    filled = _fill_image(images, fill)
    gen = torch.Generator().manual_seed(seed)

    models: dict[str, nn.Module] = {"siam": siam_model}
    was_training = {name: mod.training for name, mod in (("siam", siam_model), ("baseline", baseline)) if mod is not None}
    siam_model.eval()
    with torch.no_grad():
        total = torch.cat([
            siam_model(c.to(_device(siam_model))).total_map.float().cpu() for c in images.split(batch_size)
        ])  # (N, m, m)
    orders = {
        "siam": ("siam", _cell_ranking(total.abs())),
        "siam_random": ("siam", _cell_ranking(torch.rand(n, m, m, generator=gen))),
    }
    if baseline is not None:
        baseline.eval()
        models["baseline"] = baseline
        gc = torch.from_numpy(gradcam_maps(baseline, images, batch_size=batch_size))  # (N, H, W)
        with torch.no_grad():
            out = [baseline(c.to(_device(baseline))) for c in images.split(batch_size)]
        cam = torch.cat([o.cam.float().cpu() for o in out])  # (N, h, w)
        cam_abs = (cam - baseline.regressor.bias[0].detach().float().cpu()).abs()
        orders["baseline_gradcam"] = ("baseline", _cell_ranking(F.adaptive_avg_pool2d(gc[:, None], m)[:, 0]))
        orders["baseline_cam_abs"] = ("baseline", _cell_ranking(F.adaptive_avg_pool2d(cam_abs[:, None], m)[:, 0]))
        orders["baseline_random"] = ("baseline", _cell_ranking(torch.rand(n, m, m, generator=gen)))

    fractions = np.array([round(s * m * m / steps) / (m * m) for s in range(steps + 1)])
    result: dict[str, Any] = {
        "fill": fill,
        "steps": steps,
        "grid": m,
        "n_images": n,
        "seed": seed,
        "fractions": fractions.tolist(),
        "methods": {k: {"scored_by": v[0]} for k, v in orders.items()},
        "higher_is_better": {b: HIGHER_IS_BETTER[b] for b in benchmarks},
    }
    try:
        for bench in benchmarks:
            curves, auc, per_image = {}, {}, {}
            for method, (model_name, order) in orders.items():
                c = _curves(models[model_name], images, filled, order, grid=m, steps=steps,
                            benchmark=bench, batch_size=batch_size)  # (N, steps + 1)
                per_image[method] = _auc(c, fractions).tolist()
                curves[method] = c.mean(0).tolist()
                auc[method] = float(_auc(c.mean(0), fractions))
            ratio = {}
            for method, (model_name, _) in orders.items():
                rand = auc[f"{model_name}_random"]
                ratio[method] = float(auc[method] / rand) if rand > 0 else None
            result[bench] = {"curves": curves, "auc": auc, "per_image_auc": per_image, "auc_vs_random": ratio}
    finally:
        for name, flag in was_training.items():
            models[name].train(flag)
    return result
