"""The two SIAM heads (paper Sec. 3.1-3.2).

* :class:`AttributeHead` (part of f): 1x1 conv + ReLU -> K non-negative attribute maps A_i,
  resampled to the template grid, with a border masked out (out of place) and pooled into the
  attribute presence.
* :class:`TemplateHead` (g): z_i = <T_i, A_i> with two non-negative templates per attribute mixed
  by learnable weights, then y = w . z + b. Algebraically one effective template
  E_i = w_i (a_i1 T_i1 + a_i2 T_i2), so y = b + sum_i <E_i, A_i> exactly; with several targets,
  one such set per target over the same maps: y_t = b_t + sum_i <E_{t,i}, A_i>.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PresenceActivation = Literal["tanh", "sigmoid"]
PresenceDenominator = Literal["centre", "grid"]
PresencePooling = Literal["mean", "lse"]

__all__ = ["AttributeHead", "TemplateHead", "border_mask"]


def border_mask(grid: int, border: int, *, device: torch.device | None = None) -> torch.Tensor:
    """(grid, grid) float mask: 1 in the centre, 0 in a ``border``-cell frame."""
    if border < 0 or 2 * border >= grid:
        raise ValueError(
            f"border must satisfy 0 <= border < grid/2, got border={border} for grid={grid}"
        )
    mask = torch.zeros(grid, grid, device=device)
    mask[border : grid - border, border : grid - border] = 1.0
    return mask


class AttributeHead(nn.Module):
    """Features (B, C, h, w) -> attribute maps (B, K, m, m) and presence (B, K).

    The maps are ReLU outputs, adaptively average-pooled to the template grid m when the backbone
    grid differs (e.g. ResNet-50 at 500 px gives 16x16, pooled to 15x15 as in the authors' code),
    then multiplied by a border mask (out of place, so gradients flow; the authors zero the border
    in place, which breaks backward through this head).

    Presence (Sec. 3.1) is ``act(sum of the map / n)``: n is the number of centre cells
    ((m - 2 border)^2, ``presence_denominator="centre"``, the default: the mean over the cells that
    can be non-zero) or m^2 (``"grid"``: the authors' code average-pools the whole map, zeroed
    border included; with m = 15 and a 2-cell border that is 225 instead of 121 cells, so the same
    map gives a presence about 1.9x smaller before the activation). The default activation is
    ``tanh``: the maps are non-negative, so the mean is >= 0 and a sigmoid could never go below 0.5,
    making "absent" (label 0) unreachable, while tanh(0) = 0. The paper writes sigmoid; the
    authors' code uses tanh. ``sigmoid`` is available for comparison.

    ``presence_pooling="lse"`` (not in the paper; off by default) replaces the mean by log-sum-exp
    pooling over the same n cells (Pinheiro & Collobert, CVPR 2015):
    ``(1 / r) log((1 / n) sum_c exp(r A_c))`` with ``r = presence_lse_r``. It lies between the mean
    (r -> 0) and the max (r -> inf), so with a large r raising the presence asks for a few strong
    cells rather than mass everywhere, and its gradient goes mostly to the strongest cells.
    """

    def __init__(
        self,
        in_channels: int,
        num_attributes: int,
        *,
        grid: int,
        border: int = 2,
        presence: PresenceActivation = "tanh",
        presence_denominator: PresenceDenominator = "centre",
        presence_pooling: PresencePooling = "mean",
        presence_lse_r: float = 10.0,
    ) -> None:
        super().__init__()
        if presence_pooling not in ("mean", "lse"):
            raise ValueError(f"presence_pooling must be 'mean' or 'lse', got {presence_pooling!r}")
        if not presence_lse_r > 0 or presence_lse_r == float("inf"):
            raise ValueError(f"presence_lse_r must be a finite number > 0, got {presence_lse_r!r}")
        self.presence_pooling: PresencePooling = presence_pooling
        self.presence_lse_r = float(presence_lse_r)
        if presence not in ("tanh", "sigmoid"):
            raise ValueError(f"presence must be 'tanh' or 'sigmoid', got {presence!r}")
        if presence_denominator not in ("centre", "grid"):
            raise ValueError(f"presence_denominator must be 'centre' or 'grid', got {presence_denominator!r}")
        self.presence_denominator: PresenceDenominator = presence_denominator
        self.conv = nn.Conv2d(in_channels, num_attributes, kernel_size=1)
        self.grid = grid
        self.border = border
        self.presence_activation: PresenceActivation = presence
        self.register_buffer("mask", border_mask(grid, border), persistent=False)

    @property
    def centre_cells(self) -> int:
        return (self.grid - 2 * self.border) ** 2

    @property
    def presence_cells(self) -> int:
        """n in presence = act(sum / n): the centre cells, or all m^2 cells (authors' code)."""
        return self.centre_cells if self.presence_denominator == "centre" else self.grid**2

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = F.relu(self.conv(features))  # (B, K, h, w)
        if maps.shape[-2:] != (self.grid, self.grid):
            maps = F.adaptive_avg_pool2d(maps, self.grid)  # (B, K, m, m)
        maps = maps * self.mask.to(maps.dtype)  # (B, K, m, m), border zeroed out of place
        if self.presence_pooling == "lse":
            pooled = self._lse_pool(maps)  # (B, K) between the mean and the max of the n cells
        else:
            pooled = maps.sum(dim=(2, 3)) / self.presence_cells  # (B, K) mean over the centre (or the grid)
        presence = torch.tanh(pooled) if self.presence_activation == "tanh" else torch.sigmoid(pooled)
        return maps, presence

    def _lse_pool(self, maps: torch.Tensor) -> torch.Tensor:
        """(B, K, m, m) -> (B, K): (1/r) log(mean over the n presence cells of exp(r A))."""
        flat = maps.flatten(2)  # (B, K, m*m)
        if self.presence_denominator == "centre":
            flat = flat[..., self.mask.flatten() > 0]  # (B, K, n) the centre cells only
        r = self.presence_lse_r
        return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r  # (B, K)


class TemplateHead(nn.Module):
    """g: attribute maps (B, K, m, m) -> per-attribute evidence and T scores (Sec. 3.2).

    One set of parameters per target t (T = ``num_targets``; the paper has one, scenicness), all
    over the same attribute maps and all deterministic at initialisation:

    * ``templates`` (T, K, 2, m, m): two non-negative templates per attribute, all
      ``template_init``. Kept >= 0 by :meth:`project_` after every optimiser step.
    * ``mixing`` (T, K, 2): initialised to (+0.5, -0.5), so each attribute can learn a positive
      and a negative spatial pattern while the templates stay non-negative.
    * ``weight`` (T, K): initialised to 1/K; ``bias`` (T,): initialised to the mean training
      score of each target.
    * optional variance regressor (as in the authors' code): softplus(v_t . z2_t + c_t) over the
      2K template responses of target t.

    So score_t = b_t + sum_i <E_{t,i}, A_i> for every target. Parameters saved by one-target
    versions (no leading T axis) are read as T = 1.
    """

    def __init__(
        self,
        num_attributes: int,
        *,
        grid: int,
        num_targets: int = 1,
        template_init: float = 0.01,
        bias: float | Sequence[float] = 0.0,
        predict_variance: bool = False,
    ) -> None:
        super().__init__()
        if template_init < 0:
            raise ValueError(f"template_init must be >= 0 (templates are non-negative), got {template_init}")
        if int(num_targets) < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        k, t = num_attributes, int(num_targets)
        self.num_targets = t
        self.templates = nn.Parameter(torch.full((t, k, 2, grid, grid), float(template_init)))
        self.mixing = nn.Parameter(torch.tensor([0.5, -0.5]).repeat(t, k, 1))
        self.weight = nn.Parameter(torch.full((t, k), 1.0 / k))
        self.bias = nn.Parameter(_per_target(bias, t, name="bias"))
        self.predict_variance = predict_variance
        if predict_variance:
            self.var_weight = nn.Parameter(torch.zeros(t, k, 2))
            self.var_bias = nn.Parameter(torch.zeros(t))
        self._register_load_state_dict_pre_hook(_add_target_axis)

    def effective_templates(self) -> torch.Tensor:
        """E_{t,i} = w_{t,i} (a_{t,i1} T_{t,i1} + a_{t,i2} T_{t,i2}): (T, K, m, m)."""
        mixed = (self.mixing[..., None, None] * self.templates).sum(2)  # (T, K, m, m)
        return self.weight[..., None, None] * mixed  # (T, K, m, m)

    def forward(self, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        # NCHW layout: with channels_last maps the einsum below is ~60x slower on CPU.
        maps = maps.contiguous(memory_format=torch.contiguous_format)  # (B, K, m, m)
        z2 = torch.einsum("bkij,tkcij->btkc", maps, self.templates)  # (B, T, K, 2) <T_tic, A_i>
        z = (z2 * self.mixing).sum(-1)  # (B, T, K) mixed evidence z_{t,i}
        contributions = self.weight * z  # (B, T, K) w_{t,i} z_{t,i}, signed
        score = self.bias + contributions.sum(-1)  # (B, T) y_t = w_t . z_t + b_t
        contribution_maps = self.effective_templates() * maps[:, None]  # (B, T, K, m, m) E_{t,i} * A_i
        out = {"z": z, "contributions": contributions, "score": score, "contribution_maps": contribution_maps}
        if self.predict_variance:
            out["variance"] = F.softplus((z2 * self.var_weight).sum((2, 3)) + self.var_bias)  # (B, T)
        return out

    @torch.no_grad()
    def project_(self) -> None:
        """Project the templates onto the non-negative orthant (in place)."""
        self.templates.clamp_(min=0.0)

    def l1(self) -> torch.Tensor:
        """L1 norm of the templates (optional sparsity penalty)."""
        return self.templates.abs().sum()

    def roughness(self) -> torch.Tensor:
        """Sum of squared differences between 4-neighbour cells of the effective templates, ().

        An optional smoothness penalty: each template has m^2 free cells per attribute, far more
        than the score labels pin down, and a cell where an attribute is rarely seen otherwise
        keeps whatever noise reached it. Not in the paper; off unless
        ``optim.template_smoothness > 0``.
        """
        e = self.effective_templates()  # (T, K, m, m)
        rows = e[..., 1:, :] - e[..., :-1, :]  # (T, K, m-1, m) vertical neighbours
        cols = e[..., :, 1:] - e[..., :, :-1]  # (T, K, m, m-1) horizontal neighbours
        return rows.square().sum() + cols.square().sum()


def _per_target(value: float | Sequence[float], t: int, *, name: str) -> torch.Tensor:
    """A float for every target, (T,): one float is used for all."""
    if isinstance(value, (int, float)):
        return torch.full((t,), float(value))
    vals = torch.tensor([float(v) for v in value], dtype=torch.float32)
    if vals.shape != (t,):
        raise ValueError(f"{name} needs one value or one per target ({t}), got {len(vals)}")
    return vals


# Parameter names and their number of dimensions as written by one-target versions (no T axis).
_ONE_TARGET_NDIM = {"templates": 4, "mixing": 2, "weight": 1, "bias": 0, "var_weight": 2, "var_bias": 0}


def _add_target_axis(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # noqa: ANN001
    """Load hook: a one-target state dict (written before several targets) gets T = 1 added."""
    for name, ndim in _ONE_TARGET_NDIM.items():
        key = prefix + name
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor) and value.ndim == ndim:
            state_dict[key] = value.unsqueeze(0)
