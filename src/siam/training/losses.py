"""Losses of the SIAM training stages (paper Sec. 3.3).

* L_SUN: binary cross-entropy between the attribute presence (B, K) and the continuous SUN labels
  (fraction of annotators who saw the attribute), on SUN rows only; optionally with a positive
  weight per attribute (``optim.presence_pos_weight``, for rare attributes).
* L_SoN: mean squared error between the predicted and the mean ScenicOrNot score, on SoN rows only,
  optionally plus the squared error of the predicted vote variance. With T targets: the mean over
  the targets of each target's MSE over its rows with a value (+ its variance term); the targets
  without a row in the batch are left out of the mean. T = 1 is the one-target loss exactly.
* joint: L = L_SUN + lambda L_SoN (lambda = 0.1 by default).

Every loss is computed in float32 (also under mixed precision) and is a graph-connected zero when
its batch holds no row of its kind, so that the total stays differentiable.
"""

from __future__ import annotations

import torch

__all__ = ["sun_loss", "son_loss", "PRESENCE_EPS"]

PRESENCE_EPS = 1e-6  # keeps log(p) and log(1 - p) finite for p in [0, 1]


def _rows(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return t if mask is None else t[mask]


def sun_loss(
    presence: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean BCE over the (row, attribute) pairs of the rows selected by ``mask``.

    presence: (B, K) in [0, 1] (tanh or sigmoid of the pooled map); labels: (B, K) in [0, 1];
    mask: (B,) bool, True for rows with SUN labels (None: all rows); pos_weight: (K,) weight of the
    positive term per attribute (None: 1), -(w_k y log p + (1 - y) log(1 - p)).

    The presence is clamped to [eps, 1 - eps] *straight-through*: the loss value is that of the
    clamped presence (finite at 0 and 1), but its gradient is passed on to presences outside the
    clamp, as if they sat on its edge. A collapsed map (presence 1e-7, label 1) is thus pushed back
    up with the steepest gradient the loss has inside the clamp (-1/eps per pair), not with 0 as a
    plain clamp would; inside the clamp value and gradient are those of the plain BCE.
    """
    if presence.shape != labels.shape:
        raise ValueError(f"presence {tuple(presence.shape)} and labels {tuple(labels.shape)} differ in shape")
    p = _rows(presence, mask).float()  # (N, K)
    y = _rows(labels, mask).float()  # (N, K)
    if p.numel() == 0:
        return presence.sum() * 0.0
    p = p + (p.clamp(PRESENCE_EPS, 1.0 - PRESENCE_EPS) - p).detach()  # value clamped, gradient kept
    positive = y * torch.log(p)
    if pos_weight is not None:
        if pos_weight.shape != (p.shape[-1],):
            raise ValueError(f"pos_weight {tuple(pos_weight.shape)} must have one weight per attribute ({p.shape[-1]})")
        positive = positive * pos_weight.to(device=p.device, dtype=p.dtype)
    return -(positive + (1.0 - y) * torch.log1p(-p)).mean()


def son_loss(
    score: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    variance: torch.Tensor | None = None,
    variance_target: torch.Tensor | None = None,
    variance_mask: torch.Tensor | None = None,
    variance_weight: float = 0.0,
) -> torch.Tensor:
    """MSE of the score over the rows in ``mask`` (+ ``variance_weight`` x MSE of the variance).

    score, target: (B,); mask: (B,) bool (None: all rows). The variance term uses the rows in
    ``mask & variance_mask`` and is skipped when the model predicts no variance. Several targets:
    every tensor (B, T) (masks per target); the loss is the mean over the targets that have rows
    of each one's loss as above.
    """
    if score.shape != target.shape:
        raise ValueError(f"score {tuple(score.shape)} and target {tuple(target.shape)} differ in shape")
    if score.ndim == 2:
        return _mean_over_targets(score, target, mask, variance, variance_target, variance_mask, variance_weight)
    if score.ndim != 1:
        raise ValueError(f"score must be (B,) or (B, T), got {tuple(score.shape)}")
    pred = _rows(score, mask).float()  # (N,)
    if pred.numel() == 0:
        return score.sum() * 0.0
    loss = ((pred - _rows(target, mask).float()) ** 2).mean()
    if variance_weight > 0 and variance is not None and variance_target is not None:
        vmask = mask if variance_mask is None else (variance_mask if mask is None else mask & variance_mask)
        v = _rows(variance, vmask).float()
        if v.numel():
            loss = loss + variance_weight * ((v - _rows(variance_target, vmask).float()) ** 2).mean()
    return loss


def _mean_over_targets(
    score: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    variance: torch.Tensor | None,
    variance_target: torch.Tensor | None,
    variance_mask: torch.Tensor | None,
    variance_weight: float,
) -> torch.Tensor:
    """son_loss of (B, T) tensors: the one-target loss of each target with rows, averaged."""
    for name, t in (("mask", mask), ("variance", variance), ("variance_target", variance_target),
                    ("variance_mask", variance_mask)):
        if t is not None and t.shape != score.shape:
            raise ValueError(f"{name} {tuple(t.shape)} must have the score's shape {tuple(score.shape)} (B, T)")
    losses = []
    for t in range(score.shape[1]):
        if mask is not None and not bool(mask[:, t].any()):
            continue
        col = lambda x: None if x is None else x[:, t]  # noqa: E731
        losses.append(son_loss(score[:, t], target[:, t], col(mask), variance=col(variance),
                               variance_target=col(variance_target), variance_mask=col(variance_mask),
                               variance_weight=variance_weight))
    if not losses:
        return score.sum() * 0.0
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean()


#: mask_loss: the floor of a map's mean over the centre cells when it is normalised (a collapsed
#: all-zero map then gets a finite gradient, 1 / floor, towards its mask instead of 1 / eps).
MASK_MEAN_FLOOR = 0.05


def mask_loss(maps: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, *, border: int = 0) -> torch.Tensor:
    """Optional mask supervision (not in the paper): pull each attribute map's *shape* to its mask.

    maps: (B, K, m, m) >= 0 attribute maps; target: (B, K, m, m) in [0, 1], the per-cell mask
    coverage on the model's grid; valid: (B, K) or (B,) bool, the (row, attribute) pairs whose
    mask is known; border: cells dropped on each side (the model's border, whose maps are zeroed).

    On the centre cells, both are normalised to mean 1: P = A / max(mean A, MASK_MEAN_FLOOR) and
    Q = c / mean c; the loss is the mean over cells of (P - Q)^2, averaged over the valid pairs whose
    mask covers some centre cell. Scale-free on purpose: *how much* an attribute is present is
    L_SUN's job (presence = tanh of the map's mean), so this term only moves the map's mass into
    the mask (the quantity ``mass_in_mask`` measures) and never fights the presence labels. It is
    0 for any map proportional to the coverage (in particular equal to it), and a pair whose mask
    is empty on the centre cells contributes nothing (L_SUN already pushes its presence down).
    A graph-connected 0 when no pair counts. Hand example (2 x 2 grid, no border, c = [[1, 0],
    [0, 0]], A = [[1, a], [a, a]]): Q = [4, 0, 0, 0], P = 4 A / (1 + 3a), loss = 48 a^2 / (1 + 3a)^2.
    """
    if maps.shape != target.shape or maps.ndim != 4 or maps.shape[-1] != maps.shape[-2]:
        raise ValueError(f"maps {tuple(maps.shape)} and target {tuple(target.shape)} must be equal (B, K, m, m)")
    b, k, m, _ = maps.shape
    if valid.shape == (b,):
        valid = valid[:, None].expand(b, k)
    if valid.shape != (b, k):
        raise ValueError(f"valid must be (B,) or (B, K) = ({b},) or ({b}, {k}), got {tuple(valid.shape)}")
    if border < 0 or (border > 0 and m - 2 * border < 1):
        raise ValueError(f"border {border} leaves no centre cell of a {m} x {m} grid")
    sl = slice(border, m - border)
    a = maps[:, :, sl, sl].float().flatten(2)  # (B, K, n)
    c = target[:, :, sl, sl].float().flatten(2)  # (B, K, n)
    c_mean = c.mean(-1)  # (B, K)
    use = valid.bool() & (c_mean > 0)  # (B, K)
    if not bool(use.any()):
        return maps.sum() * 0.0
    a, c = a[use], c[use]  # (N, n)
    p = a / a.mean(-1, keepdim=True).clamp_min(MASK_MEAN_FLOOR)
    q = c / c.mean(-1, keepdim=True)
    return ((p - q) ** 2).mean()

__all__ += ["mask_loss", "MASK_MEAN_FLOOR"]
