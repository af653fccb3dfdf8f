"""Budget files that change the quick budget's recipe in one place, and nowhere else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stage_configs(budget: str, tmp_path: Path) -> dict:
    from siam.quickstart import RECIPE, stage_configs
    from siam.truth.config import read_budget

    _, b = read_budget(budget)
    raw, overrides = b.recipe(RECIPE)
    return stage_configs(tmp_path, tmp_path / "world", raw, list(overrides))


def test_the_head18_budget_trains_g_alone_three_times_longer_and_changes_nothing_else(tmp_path) -> None:
    """configs/truth_quick_head18.yaml: son-head 18 epochs instead of the quick budget's 6."""
    head18 = _stage_configs(str(ROOT / "configs" / "truth_quick_head18.yaml"), tmp_path)
    quick = _stage_configs("quick", tmp_path)
    assert set(head18) == set(quick) and len(quick) == 4
    assert (quick["son_head"].trainer.max_epochs, head18["son_head"].trainer.max_epochs) == (6, 18)
    for stage, cfg in head18.items():
        ref = quick[stage]
        if stage == "son_head":
            ref = dataclasses.replace(ref, trainer=dataclasses.replace(ref.trainer, max_epochs=18))
        assert dataclasses.asdict(cfg) == dataclasses.asdict(ref), stage


def test_the_warmup_budget_holds_the_backbone_for_two_sun_epochs_and_changes_nothing_else(tmp_path) -> None:
    """configs/truth_quick_warmup.yaml: optim.head_warmup_epochs 2 in the sun stage only."""
    warm = _stage_configs(str(ROOT / "configs" / "truth_quick_warmup.yaml"), tmp_path)
    quick = _stage_configs("quick", tmp_path)
    assert set(warm) == set(quick) and len(quick) == 4
    assert (quick["sun"].optim.head_warmup_epochs, warm["sun"].optim.head_warmup_epochs) == (0, 2)
    for stage, cfg in warm.items():
        ref = quick[stage]
        if stage == "sun":
            ref = dataclasses.replace(ref, optim=dataclasses.replace(ref.optim, head_warmup_epochs=2))
        assert dataclasses.asdict(cfg) == dataclasses.asdict(ref), stage


@pytest.mark.parametrize(("name", "weight", "fraction"), [
    ("truth_128px_masks.yaml", 0.03, 1.0), ("truth_128px_masks10.yaml", 0.1, 0.1),
])
def test_the_128px_mask_budgets_are_the_128px_budget_plus_the_mask_keys(tmp_path, name, weight, fraction) -> None:
    """configs/truth_128px_masks*.yaml: configs/truth_quick_128px.yaml with mask supervision only."""
    masked = _stage_configs(str(ROOT / "configs" / name), tmp_path)
    plain = _stage_configs(str(ROOT / "configs" / "truth_quick_128px.yaml"), tmp_path)
    assert set(masked) == set(plain) and len(plain) == 4
    for stage, cfg in masked.items():
        ref = plain[stage]
        assert (ref.preprocessing.resize, ref.optim.mask_weight) == (128, 0.0)
        ref = dataclasses.replace(ref, optim=dataclasses.replace(ref.optim, mask_weight=weight),
                                  data=dataclasses.replace(ref.data, mask_fraction=fraction))
        assert dataclasses.asdict(cfg) == dataclasses.asdict(ref), stage
