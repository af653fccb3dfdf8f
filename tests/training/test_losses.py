from __future__ import annotations

import math

import pytest
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


def test_sun_loss_pushes_a_collapsed_positive_back_up() -> None:
    """Presence 1e-7 with label 1: the old plain clamp gave gradient 0; the straight-through clamp
    gives the gradient at the clamp's edge, -1/eps per pair (torch's BCE: -1/p)."""
    from siam.training.losses import PRESENCE_EPS

    p = torch.tensor([[1e-7, 0.5]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0]])
    sun_loss(p, y).backward()
    ours = float(p.grad[0, 0])
    assert ours == pytest.approx(-1.0 / PRESENCE_EPS / 2, rel=1e-4)  # mean over 2 pairs: -5e5
    q = p.detach().clone().requires_grad_(True)
    F.binary_cross_entropy(q, y).backward()
    assert float(q.grad[0, 0]) == pytest.approx(-5e6, rel=1e-3)  # the reference
    assert ours < -1e5 and (ours < 0) == (float(q.grad[0, 0]) < 0)
    # The other pair is untouched by the clamp: the plain BCE gradient (p - y) / (p (1 - p)) / 2 = 1.
    assert float(p.grad[0, 1]) == pytest.approx(1.0, rel=1e-5)
    # A saturated negative (presence above 1 - eps, label 0) is pushed down the same way.
    s = torch.tensor([[1.0]], requires_grad=True)
    sun_loss(s, torch.tensor([[0.0]])).backward()
    assert float(s.grad) == pytest.approx(1.0 / PRESENCE_EPS, rel=0.05)  # float32 rounds 1 - eps


def test_sun_loss_values_unchanged_inside_the_clamp() -> None:
    """Hand-computed: p = (0.2, 0.9), y = (1, 0.5): (-ln 0.2 - 0.5 ln 0.9 - 0.5 ln 0.1) / 2."""
    p = torch.tensor([[0.2, 0.9]])
    y = torch.tensor([[1.0, 0.5]])
    want = (-math.log(0.2) - 0.5 * math.log(0.9) - 0.5 * math.log(0.1)) / 2
    assert float(sun_loss(p, y)) == pytest.approx(want, rel=1e-6)
    # Outside the clamp the value is that of the clamped presence (as before): -ln(1e-6) for p = 1e-9.
    assert float(sun_loss(torch.tensor([[1e-9]]), torch.tensor([[1.0]]))) == pytest.approx(-math.log(1e-6), rel=1e-5)


def test_sun_loss_pos_weight_scales_the_positive_term_per_attribute() -> None:
    """Hand-computed: p = (0.5, 0.25), y = (1, 0.5), w = (3, 1):
    (-3 ln 0.5 - 0.5 ln 0.25 - 0.5 ln 0.75) / 2."""
    p = torch.tensor([[0.5, 0.25]])
    y = torch.tensor([[1.0, 0.5]])
    w = torch.tensor([3.0, 1.0])
    want = (-3 * math.log(0.5) - 0.5 * math.log(0.25) - 0.5 * math.log(0.75)) / 2
    assert float(sun_loss(p, y, pos_weight=w)) == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(sun_loss(p, y, pos_weight=torch.ones(2)), sun_loss(p, y))
    with pytest.raises(ValueError, match="one weight per attribute"):
        sun_loss(p, y, pos_weight=torch.ones(3))


def test_a_collapsed_attribute_recovers_only_with_the_straight_through_clamp() -> None:
    """presence = tanh(relu(w)) with w = 1e-7 and label 1: ten Adam steps on sun_loss raise the
    presence above 0.1; with the old plain clamp the gradient is 0 and w never moves. A map whose
    ReLU is dead everywhere (w < 0: presence exactly 0) gets no gradient from either loss."""
    from siam.training.losses import PRESENCE_EPS

    def train(loss_fn, start: float = 1e-7) -> float:  # noqa: ANN001
        w = torch.tensor([start], requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.05)
        for _ in range(10):
            opt.zero_grad()
            loss_fn(torch.tanh(torch.relu(w))[None], torch.ones(1, 1)).backward()
            opt.step()
        return float(torch.tanh(torch.relu(w.detach())))

    def old(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # the loss before the fix
        p = p.clamp(PRESENCE_EPS, 1 - PRESENCE_EPS)
        return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()

    assert train(sun_loss) > 0.1
    assert train(old) == pytest.approx(1e-7, rel=1e-3)
    assert train(sun_loss, start=-0.1) == train(old, start=-0.1) == 0.0


def test_son_loss_of_one_target_as_b_by_1_equals_the_one_target_formula_and_its_gradients() -> None:
    torch.manual_seed(0)
    s = torch.randn(6, requires_grad=True)
    v = torch.rand(6, requires_grad=True)
    t, vt = torch.randn(6), torch.rand(6)
    mask, vmask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool), torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)
    old = ((s[mask] - t[mask]) ** 2).mean() + 0.3 * ((v[mask & vmask] - vt[mask & vmask]) ** 2).mean()
    g_old = torch.autograd.grad(old, (s, v))
    new = son_loss(s[:, None], t[:, None], mask[:, None], variance=v[:, None], variance_target=vt[:, None],
                   variance_mask=vmask[:, None], variance_weight=0.3)
    g_new = torch.autograd.grad(new, (s, v))
    assert torch.equal(new, old) and all(torch.equal(a, b) for a, b in zip(g_old, g_new))
    one = son_loss(s, t, mask, variance=v, variance_target=vt, variance_mask=vmask, variance_weight=0.3)
    assert torch.equal(one, old)


def test_son_loss_of_several_targets_is_the_mean_of_each_targets_mse_over_its_rows() -> None:
    s = torch.tensor([[1.0, 0.0, 5.0], [2.0, 4.0, 5.0], [3.0, 1.0, 5.0]])
    t = torch.tensor([[2.0, 9.0, 0.0], [2.0, 2.0, 0.0], [5.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, False], [True, True, False], [False, True, False]])
    # target 0: rows 0, 1 -> (1 + 0) / 2; target 1: rows 1, 2 -> (4 + 1) / 2; target 2: no row, left out
    assert float(son_loss(s, t, mask)) == (0.5 + 2.5) / 2
    # A row's value of one target does not leak into another: changing a masked cell changes nothing.
    t2 = t.clone()
    t2[0, 1] = -100.0
    assert float(son_loss(s, t2, mask)) == (0.5 + 2.5) / 2
    empty = son_loss(s.requires_grad_(), t, torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match=r"mask \(3,\) must have the score's shape \(3, 3\)"):
        son_loss(s, t, mask[:, 0])
