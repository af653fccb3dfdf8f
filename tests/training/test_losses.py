from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from siam.training.losses import son_loss, sun_loss


def test_sun_loss_matches_torch_bce_on_masked_rows() -> None:
    torch.manual_seed(0)
    p = torch.rand(5, 3) * 0.98 + 0.01
    y = torch.rand(5, 3)
    mask = torch.tensor([True, False, True, True, False])
    want = F.binary_cross_entropy(p[mask], y[mask])
    torch.testing.assert_close(sun_loss(p, y, mask), want)
    # Rows outside the mask do not matter.
    p2 = p.clone()
    p2[~mask] = 0.5
    torch.testing.assert_close(sun_loss(p2, y, mask), want)


def test_sun_loss_finite_at_presence_zero_and_empty_mask() -> None:
    p = torch.zeros(2, 2, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    loss = sun_loss(p, y)
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert torch.isfinite(p.grad).all()
    empty = sun_loss(p, y, torch.tensor([False, False]))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_son_loss_mse_and_variance_term() -> None:
    s = torch.tensor([1.0, 2.0, 3.0])
    t = torch.tensor([2.0, 2.0, 5.0])
    mask = torch.tensor([True, True, False])
    assert float(son_loss(s, t, mask)) == 0.5  # (1 + 0) / 2
    v = torch.tensor([1.0, 1.0, 1.0])
    vt = torch.tensor([3.0, 1.0, 9.0])
    got = son_loss(s, t, mask, variance=v, variance_target=vt, variance_mask=torch.tensor([True, False, True]),
                   variance_weight=0.5)
    assert float(got) == 0.5 + 0.5 * 4.0  # only row 0 has a score and a variance
