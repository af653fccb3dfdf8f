"""The optional mask supervision loss (optim.mask_weight) and its place in L_SUN."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from siam.data.samples import Batch, collate
from siam.models.siam import build_model
from siam.training.config import OptimConfig
from siam.training.losses import MASK_MEAN_FLOOR, mask_loss
from siam.training.module import SiamModule

from .helpers import NAMES, SIZE, samples


def _corner(a: float) -> tuple[torch.Tensor, torch.Tensor]:
    """2 x 2 grid, coverage [[1, 0], [0, 0]], map [[1, a], [a, a]] (hand value 48 a^2 / (1 + 3a)^2)."""
    c = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    return torch.tensor([[1.0, a], [a, a]]).view(1, 1, 2, 2), c


def test_mask_loss_is_zero_for_a_map_equal_to_its_mask_target() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 4, 6, 6, generator=g)
    valid = torch.ones(3, 4, dtype=torch.bool)
    assert mask_loss(target.clone(), target, valid).item() == 0.0
    assert mask_loss(target.clone(), target, valid, border=1).item() == 0.0
    assert mask_loss(2.5 * target, target, valid).item() == pytest.approx(0.0, abs=1e-10)  # scale-free


def test_mask_loss_hand_values_grow_as_the_map_leaves_the_mask() -> None:
    values = []
    for a in (0.0, 0.1, 1 / 3, 1.0, 3.0):
        maps, c = _corner(a)
        got = mask_loss(maps, c, torch.tensor([True])).item()
        assert got == pytest.approx(48 * a * a / (1 + 3 * a) ** 2, rel=1e-6)
        values.append(got)
    assert values == sorted(values) and values[0] == 0.0 and values[-1] > values[1]
    assert values[2] == pytest.approx(4 / 3) and values[3] == pytest.approx(3.0)


def test_a_collapsed_map_gets_a_finite_push_towards_its_mask() -> None:
    maps, c = _corner(0.0)
    maps = (maps * 0.0).requires_grad_(True)  # all-zero map
    loss = mask_loss(maps, c, torch.tensor([True]))
    loss.backward()
    assert loss.item() == pytest.approx(((torch.tensor([4.0, 0, 0, 0])) ** 2).mean().item())  # mean Q^2 = 4
    g = maps.grad.flatten()
    # d/dA_0 of mean((A / floor - Q)^2) at A = 0: 2 (0 - 4) / (4 floor); only the masked cell is pushed up.
    assert g[0].item() == pytest.approx(-2.0 / MASK_MEAN_FLOOR) and torch.all(g[1:] == 0)


def test_rows_and_attributes_without_masks_contribute_nothing() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 4, 4, generator=g)
    maps = torch.rand(2, 3, 4, 4, generator=g).requires_grad_(True)
    valid = torch.tensor([[True, False, True], [False, False, False]])
    loss = mask_loss(maps, target, valid)
    loss.backward()
    assert maps.grad[1].abs().sum() == 0 and maps.grad[0, 1].abs().sum() == 0
    assert maps.grad[0, 0].abs().sum() > 0 and maps.grad[0, 2].abs().sum() > 0
    # the same loss with the unmasked pairs' maps and targets replaced by anything
    other = maps.detach().clone()
    other[1] = 7.0
    other[0, 1] = torch.rand(4, 4, generator=g)
    assert mask_loss(other, target, valid).item() == pytest.approx(loss.item(), rel=1e-6)
    # (B,) validity = every attribute of the row; a row without masks: a graph-connected zero
    row = torch.tensor([True, False])
    assert mask_loss(maps, target, row).item() == pytest.approx(
        mask_loss(maps, target, torch.tensor([[True] * 3, [False] * 3])).item())
    none = mask_loss(maps, target, torch.zeros(2, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
    # a valid pair whose mask is empty on the centre cells is skipped (L_SUN handles absence)
    empty = target.clone()
    empty[0, 0] = 0.0
    assert mask_loss(maps, empty, valid).item() == pytest.approx(
        mask_loss(maps, target, torch.tensor([[False, False, True], [False] * 3])).item())


def test_mask_loss_ignores_the_border_cells() -> None:
    target = torch.zeros(1, 1, 5, 5)
    target[0, 0, 1:4, 1:3] = 1.0
    maps = target.clone()
    maps[0, 0, 0, :] = 9.0  # only in the 1-cell border
    assert mask_loss(maps, target, torch.tensor([True]), border=1).item() == 0.0
    assert mask_loss(maps, target, torch.tensor([True]), border=0).item() > 0.1


def test_mask_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="must be equal"):
        mask_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 3, 3), torch.tensor([True]))
    with pytest.raises(ValueError, match="valid must be"):
        mask_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="leaves no centre cell"):
        mask_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.tensor([True]), border=2)


def _module(weight: float) -> SiamModule:
    torch.manual_seed(0)
    model = build_model(backbone="tiny", attributes=NAMES, grid=4, border=0)
    return SiamModule(model, stage="sun", optim=replace(OptimConfig(), mask_weight=weight))


def _sun_batch(with_masks: bool) -> Batch:
    items = samples("sun", 4)
    g = torch.Generator().manual_seed(3)
    if with_masks:
        for i, s in enumerate(items[:3]):
            s.masks = (torch.rand(len(NAMES), 4, 4, generator=g) > 0.5).float()
            s.masks_valid = torch.tensor([True, i != 1, True])
    return collate(items)


def _grads(module: SiamModule, batch: Batch) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    module.zero_grad()
    terms = module.compute_losses({"sun": batch})
    terms["total"].backward()
    return terms, [p.grad.clone() for p in module.model.parameters() if p.grad is not None]


def test_mask_weight_zero_leaves_the_loss_and_gradients_as_the_paper() -> None:
    plain, plain_g = _grads(_module(0.0), _sun_batch(False))
    masked, masked_g = _grads(_module(0.0), _sun_batch(True))
    assert "mask" not in masked and torch.equal(plain["total"], masked["total"])
    assert len(plain_g) == len(masked_g) and all(torch.equal(a, b) for a, b in zip(plain_g, masked_g))


def test_mask_weight_adds_the_mask_term_to_l_sun() -> None:
    batch = _sun_batch(True)
    module = _module(0.5)
    terms = module.compute_losses({"sun": batch})
    out = module.model(batch.image)
    valid = batch.masks_valid & batch.attributes_mask[:, None]
    assert valid[3].sum() == 0 and not bool(valid[1, 1])  # row 3 has no masks, row 1 no mask for 'green'
    # a mean over the 4 labelled images, row 3 (no mask) adding 0: 3/4 of the mean over masked rows
    expected = 0.75 * mask_loss(out.maps, batch.masks, valid, border=0)
    assert terms["mask"].item() == pytest.approx(expected.item(), rel=1e-5) and terms["mask"].item() > 0
    assert terms["total"].item() == pytest.approx(terms["sun"].item() + 0.5 * terms["mask"].item(), rel=1e-5)
    # masks pooled to another grid are refused with a clear message
    bad = _sun_batch(True)
    bad.masks = torch.zeros(4, len(NAMES), 2, 2)
    with pytest.raises(ValueError, match="does not match the attribute maps"):
        module.compute_losses({"sun": bad})


def test_collate_carries_masks_and_marks_rows_without_them() -> None:
    batch = _sun_batch(True)
    assert batch.masks is not None and batch.masks.shape == (4, len(NAMES), 4, 4)
    assert batch.masks_valid.tolist() == [[True, True, True], [True, False, True], [True, True, True],
                                          [False, False, False]]
    assert batch.masks[3].abs().sum() == 0
    assert collate(samples("sun", 2)).masks is None
    assert batch.image.shape[-1] == SIZE


def test_each_masked_image_pulls_alike_whatever_the_mask_fraction() -> None:
    """A batch where one image in four has masks gives that image the same gradient as a batch where
    all four have masks (the term is a mean over the labelled images, not over the masked ones), and
    with masks everywhere the term is plain mask_loss."""
    module = _module(1.0)
    full = _sun_batch(True)
    full.masks_valid[:] = True
    g = torch.Generator().manual_seed(5)
    full.masks = (torch.rand(full.masks.shape, generator=g) > 0.5).float()
    out = module.model(full.image)
    terms = module.compute_losses({"sun": full})
    assert terms["mask"].item() == pytest.approx(mask_loss(out.maps, full.masks, full.masks_valid).item(), rel=1e-5)
    sparse = _sun_batch(True)
    sparse.masks, sparse.masks_valid = full.masks.clone(), full.masks_valid.clone()
    sparse.masks_valid[1:] = False
    sparse.masks[1:] = 0
    per_image = [mask_loss(out.maps[i:i + 1], full.masks[i:i + 1], full.masks_valid[i:i + 1]) for i in range(4)]
    t_sparse = module.compute_losses({"sun": sparse})["mask"]
    # mean over the 4 labelled images of each one's own term (valid pairs per row are equal here)
    assert t_sparse.item() == pytest.approx(per_image[0].item() / 4, rel=1e-5)
    assert terms["mask"].item() == pytest.approx(sum(p.item() for p in per_image) / 4, rel=1e-5)
