"""g alone, over fixed inputs: the oracle-f ceiling and the shuffled-scores control.

:func:`fit_head` trains a fresh :class:`~siam.models.heads.TemplateHead` (g) with the SoN stage's
recipe (:class:`HeadRecipe`: Adam, learning rate and schedule, epochs, batch size, template
smoothness, template init, the bias set to the mean training score, projection onto >= 0 after every
step, horizontal flips when the recipe flips) over precomputed inputs X (N, K, m, m) in place of f's
attribute maps. With X = the true masks pooled to the model's grid, g sees what a perfect f would
give it: its recovery is what any f could allow at this noise level and data size (the *oracle-f*
ceiling). With X = a trained f's maps and the scores permuted across images, nothing true can be
learned: its recovery must fall to ~0 (the *shuffled* control).

Each fit is a plain loop over tensors (a few seconds on a CPU), seeded by ``seed`` (data order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from siam.evaluation import planted as P
from siam.models.heads import TemplateHead, border_mask

__all__ = ["HeadRecipe", "fit_head", "head_recovery", "true_inputs", "oracle_ceiling"]


@dataclass(frozen=True)
class HeadRecipe:
    """The SoN stage's recipe for g (from a :class:`~siam.training.config.TrainConfig` of stage
    ``son-head``: :meth:`from_config`)."""

    lr: float = 0.01
    lr_schedule: str = "cosine"
    lr_decay_every: int = 10
    lr_decay_gamma: float = 0.1
    epochs: int = 6
    max_steps: int = -1
    batch_size: int = 16
    template_smoothness: float = 0.0
    template_l1: float = 0.0
    template_init: float = 0.01
    weight_decay: float = 0.0
    hflip: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> "HeadRecipe":
        o = cfg.optim
        return cls(
            lr=o.lr, lr_schedule=o.lr_schedule, lr_decay_every=o.lr_decay_every, lr_decay_gamma=o.lr_decay_gamma,
            epochs=cfg.trainer.max_epochs, max_steps=cfg.trainer.max_steps,
            batch_size=cfg.data.son_batch_size or cfg.data.batch_size, template_smoothness=o.template_smoothness,
            template_l1=o.template_l1, template_init=cfg.model.template_init, weight_decay=o.weight_decay,
            hflip=cfg.preprocessing.hflip,
        )


def fit_head(inputs: Any, scores: Any, *, recipe: HeadRecipe, seed: int = 0) -> TemplateHead:
    """Train g on inputs (N, K, m, m) >= 0 and scores (N,); returns the trained head (eval mode)."""
    X = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
    if X.ndim != 4 or X.shape[-1] != X.shape[-2] or y.shape != (X.shape[0],):
        raise ValueError(f"need inputs (N, K, m, m) and scores (N,), got {tuple(X.shape)} and {tuple(y.shape)}")
    n, k, m = X.shape[0], X.shape[1], X.shape[-1]
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        head = TemplateHead(k, grid=m, template_init=recipe.template_init, bias=float(y.mean()))
    opt = torch.optim.Adam(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    per_epoch = math.ceil(n / recipe.batch_size)
    steps = per_epoch * recipe.epochs if recipe.max_steps < 0 else min(recipe.max_steps, per_epoch * recipe.epochs)
    if recipe.lr_schedule == "cosine":
        sched: Any = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    else:
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, recipe.lr_decay_every) * per_epoch,
                                                gamma=recipe.lr_decay_gamma if recipe.lr_decay_every > 0 else 1.0)
    step = 0
    head.train()
    while step < steps:
        for idx in torch.randperm(n, generator=gen).split(recipe.batch_size):
            if step >= steps:
                break
            x = X[idx]  # (B, K, m, m)
            if recipe.hflip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = (head(x)["score"][:, 0] - y[idx]).square().mean()  # one target: (B,)
            if recipe.template_smoothness > 0:
                loss = loss + recipe.template_smoothness * head.roughness()
            if recipe.template_l1 > 0:
                loss = loss + recipe.template_l1 * head.l1()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            head.project_()
            sched.step()
            step += 1
    return head.eval()


def true_inputs(truth: P.PlantedTruth, source: str, ids: Any, *, grid: int, resize: int, crop: int,
                attributes: Any) -> tuple[np.ndarray, np.ndarray]:
    """The true masks of images ``ids`` as a perfect f would give them: coverage of each of the
    model's grid cells after the evaluation transform (N, K, grid, grid) float32, with the pooled
    masks on the truth grid (N, K, m_t, m_t) float32 (for planted contributions); attributes in
    the order ``attributes`` (a subset of the truth's)."""
    ti = [truth.attributes.index(a) for a in attributes]
    model_grid, truth_grid = [], []
    for ident in ids:
        masks = truth.masks(source, str(ident))[ti]  # (K, H, W)
        model_grid.append(P.masks_on_model_grid(masks, grid, resize=resize, crop=crop).numpy())
        truth_grid.append(P.pool_masks(masks, truth.grid).numpy())
    return np.stack(model_grid).astype(np.float32), np.stack(truth_grid).astype(np.float32)


@torch.no_grad()
def head_recovery(head: TemplateHead, inputs: Any, pooled_truth: Any, truth: P.PlantedTruth,
                  attributes: Any, *, border: int = 0, observed_share: float = P.OBSERVED_CELL_SHARE) -> dict[str, Any]:
    """contribution_r and template_r (observed cells) of g over test inputs (N, K, m, m), against
    the planted contributions from ``pooled_truth`` (N, K, m_t, m_t) on the truth grid."""
    names = list(attributes)
    X = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    pooled = torch.as_tensor(np.asarray(pooled_truth), dtype=torch.float32)
    ti = [truth.attributes.index(a) for a in names]
    T = torch.as_tensor(truth.templates[ti], dtype=torch.float32)  # (K, m_t, m_t)
    contrib = head(X)["contributions"][:, 0]  # (N, K), the one target
    planted = P.planted_contributions(T, pooled)  # (N, K)
    present = pooled.flatten(2).amax(-1) > 0  # (N, K)
    cr = P.contribution_r(contrib, planted, present, names)
    cr_each = P.contribution_r_per_attribute(contrib, planted, present, names)
    seen = P.observed_cells(pooled, share=observed_share)  # (K, m_t, m_t), as the evaluation's template_r
    valid = border_mask(X.shape[-1], border)
    tr = P.template_r(head.effective_templates()[0], T, names, valid=valid, cells=seen)
    sg = P.effect_sign_agreement(contrib, planted, present, names)
    return {"contribution_r": cr.value, "template_r": tr.value, "template_sign_agreement": sg.value,
            "per_attribute": {"contribution_r": cr_each.per_item, "template_r": tr.per_item},
            "contributions": contrib.numpy(), "planted": planted.numpy(), "present": present.numpy()}


@torch.no_grad()
def head_rmse(head: TemplateHead, inputs: Any, scores: Any) -> float:
    """Test RMSE of g over inputs (N, K, m, m) against scores (N,) (target 0)."""
    from siam.evaluation.metrics import rmse

    X = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    return rmse(head(X)["score"][:, 0].double(), np.asarray(scores, dtype=np.float64))  # (N,) vs (N,)


def oracle_ceiling(root: Any, *, son_head_config: Any, split: str = "test", seed: int = 0,
                   observed_share: float | None = None) -> dict[str, Any] | None:
    """The oracle-f ceiling of one planted world ``root`` (the ``siam synth`` layout with truth/, or
    its CSV copy, :mod:`siam.truth.worlds`): g trained with ``son_head_config``'s recipe on the true
    masks of the SoN training images and their written scores, evaluated on ``split``. Returns
    :func:`head_recovery`'s numbers (without the arrays), or None when the folder has no planted truth."""
    from siam.truth.worlds import attribute_names, son_set, world_truth

    truth = world_truth(root)
    if truth is None:
        return None
    cfg = son_head_config
    names = [a for a in attribute_names(root, cfg.attributes) if a in truth.attributes]
    pre = cfg.preprocessing
    grid = int(cfg.model.grid)
    seed_split = cfg.data.split_seed
    train = son_set(root, "train", seed=seed_split)
    test = son_set(root, split, seed=seed_split)
    x_tr, _ = true_inputs(truth, "son", train.ids, grid=grid, resize=pre.resize, crop=pre.crop, attributes=names)
    x_te, p_te = true_inputs(truth, "son", test.ids, grid=grid, resize=pre.resize, crop=pre.crop, attributes=names)
    head = fit_head(x_tr, train.scores.numpy(), recipe=HeadRecipe.from_config(cfg), seed=seed)
    rec = head_recovery(head, x_te, p_te, truth, names, border=cfg.model.border,
                        observed_share=P.OBSERVED_CELL_SHARE if observed_share is None else observed_share)
    return _finite({k: v for k, v in rec.items() if k not in ("contributions", "planted", "present")})


def _finite(obj: Any) -> Any:
    """NaN -> None, recursively (for JSON reports)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj
