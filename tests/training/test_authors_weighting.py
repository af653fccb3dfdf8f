"""The authors' adaptive loss weighting, offered as options: hand-computed values and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import siam
from siam.data.samples import collate
from siam.training.config import OptimConfig, config_from_dict
from siam.training.module import SiamModule

from .helpers import NAMES, samples

ROOT = Path(__file__).resolve().parents[2]

K, GRID = len(NAMES), 4


def _module(stage: str, **optim) -> SiamModule:
    torch.manual_seed(0)
    model = siam.build_model(backbone="tiny", attributes=NAMES, grid=GRID, border=0).eval()
    return SiamModule(model, stage=stage, optim=OptimConfig(**optim))


def _batches() -> dict:
    return {"sun": collate(samples("sun", 4, 3)), "son": collate(samples("son", 5, 4))}


def _bias_grad(loss: torch.Tensor, module: SiamModule) -> torch.Tensor:
    return torch.autograd.grad(loss, module.model.template_head.bias, retain_graph=True)[0]


def test_adaptive_son_weight_is_lambda_times_the_sun_loss_in_value_and_rescales_the_gradient() -> None:
    fixed = _module("joint")
    adaptive = _module("joint", son_weight_mode="adaptive")
    got_f, got_a = fixed.compute_losses(_batches()), adaptive.compute_losses(_batches())
    a, b = float(got_a["sun"]), float(got_a["son"])
    torch.testing.assert_close(got_f["sun"], got_a["sun"])
    assert float(got_f["total"]) == pytest.approx(a + 0.1 * b)  # the paper: L_SUN + 0.1 L_SoN
    assert float(got_a["total"]) == pytest.approx(a + 0.1 * a)  # authors: + 0.1 (L_SUN / L_SoN) L_SoN
    # Only L_SoN depends on the bias b: its gradient is scaled by 0.1 * a / b (the ratio is detached).
    g_son = _bias_grad(got_a["son"], adaptive)
    torch.testing.assert_close(_bias_grad(got_a["total"], adaptive), 0.1 * (a / b) * g_son)
    torch.testing.assert_close(_bias_grad(got_f["total"], fixed), 0.1 * g_son)


def test_template_l1_fixed_is_weight_times_the_sum_adaptive_is_weight_times_the_main_loss() -> None:
    # All 2 K m^2 = 96 template cells start at 0.01: sum |T| = 0.96, mean |T| = 0.01.
    fixed = _module("son-head", template_l1=0.001)
    got = fixed.compute_losses(_batches())
    assert float(got["template_l1"]) == pytest.approx(2 * K * GRID * GRID * 0.01) == pytest.approx(0.96)
    assert float(got["total"]) == pytest.approx(float(got["son"]) + 0.001 * 0.96)
    adaptive = _module("son-head", template_l1=0.001, template_l1_mode="adaptive")
    got = adaptive.compute_losses(_batches())
    b = float(got["son"])
    assert float(got["template_l1"]) == pytest.approx(0.01)
    assert float(got["total"]) == pytest.approx(1.001 * b)  # authors: L_SoN + 0.001 L_SoN in value
    # Gradient on one template cell: 0.001 * (b / 0.01) * d mean|T| / dT = 0.001 * b / 0.01 / 96.
    t = adaptive.model.template_head.templates
    g_total = torch.autograd.grad(got["total"], t, retain_graph=True)[0]
    g_son = torch.autograd.grad(got["son"], t, retain_graph=True)[0]
    torch.testing.assert_close(g_total - g_son, torch.full_like(t, 0.001 * b / 0.01 / t.numel()))
    # In the joint stage the reference is L_SUN.
    joint = _module("joint", template_l1=0.001, template_l1_mode="adaptive")
    got = joint.compute_losses(_batches())
    assert float(got["total"]) == pytest.approx(float(got["sun"]) * 1.001 + 0.1 * float(got["son"]))


def test_modes_are_config_keys_with_the_paper_as_default() -> None:
    cfg = config_from_dict({"optim": {"son_weight_mode": "adaptive", "template_l1_mode": "adaptive"}})
    assert (cfg.optim.son_weight_mode, cfg.optim.template_l1_mode) == ("adaptive", "adaptive")
    paper = siam.training.config.load_config(ROOT / "configs" / "paper.yaml", stage="joint")
    assert (paper.optim.son_weight_mode, paper.optim.template_l1_mode, paper.model.presence_denominator) == (
        "fixed", "fixed", "centre")
    with pytest.raises(siam.errors.ConfigError, match="optim.son_weight_mode: got 'auto'"):
        config_from_dict({"optim": {"son_weight_mode": "auto"}})
