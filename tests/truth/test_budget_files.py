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


def _assert_only_change(budget: str, base: str, tmp_path, *, changes: dict[str, dict]) -> None:
    """``configs/<budget>``'s four stage configs equal ``configs/<base>``'s but for ``changes``
    (``{stage: {"section.key": value}}``), each of which differs from the base."""
    got = _stage_configs(str(ROOT / "configs" / budget), tmp_path)
    ref_all = _stage_configs(str(ROOT / "configs" / base), tmp_path)
    assert set(got) == set(ref_all) and len(ref_all) == 4 and set(changes) <= set(ref_all)
    for stage, cfg in got.items():
        ref = ref_all[stage]
        for dotted, value in changes.get(stage, {}).items():
            section, key = dotted.split(".")
            part = getattr(ref, section)
            assert getattr(part, key) != value, (stage, dotted, "the base already has it")
            ref = dataclasses.replace(ref, **{section: dataclasses.replace(part, **{key: value})})
        assert dataclasses.asdict(cfg) == dataclasses.asdict(ref), stage


def test_the_quick_budget_is_the_short_one_with_the_sun_and_joint_stages_twice_as_long(tmp_path) -> None:
    """configs/truth_quick.yaml (= BUDGETS["quick"]) against configs/truth_short.yaml, the quick
    budget until 2026-12-02: sun 24 and joint 12 epochs instead of 12 and 6, nothing else."""
    _assert_only_change("truth_quick.yaml", "truth_short.yaml", tmp_path,
                        changes={"sun": {"trainer.max_epochs": 24}, "joint": {"trainer.max_epochs": 12}})


def test_the_head18_budget_trains_g_alone_three_times_longer_and_changes_nothing_else(tmp_path) -> None:
    """configs/truth_quick_head18.yaml: son-head 18 epochs instead of the short budget's 6."""
    _assert_only_change("truth_quick_head18.yaml", "truth_short.yaml", tmp_path,
                        changes={"son_head": {"trainer.max_epochs": 18}})


def test_the_warmup_budget_holds_the_backbone_for_two_sun_epochs_and_changes_nothing_else(tmp_path) -> None:
    """configs/truth_quick_warmup.yaml: optim.head_warmup_epochs 2 in the sun stage only."""
    _assert_only_change("truth_quick_warmup.yaml", "truth_short.yaml", tmp_path,
                        changes={"sun": {"optim.head_warmup_epochs": 2}})


@pytest.mark.parametrize(("name", "weight", "fraction"), [
    ("truth_128px_masks.yaml", 0.03, 1.0), ("truth_128px_masks10.yaml", 0.1, 0.1),
])
def test_the_128px_mask_budgets_are_the_128px_budget_plus_the_mask_keys(tmp_path, name, weight, fraction) -> None:
    """configs/truth_128px_masks*.yaml: configs/truth_quick_128px.yaml with mask supervision only."""
    plain = _stage_configs(str(ROOT / "configs" / "truth_quick_128px.yaml"), tmp_path)
    assert all(c.preprocessing.resize == 128 for c in plain.values())
    changes = {"optim.mask_weight": weight, **({"data.mask_fraction": fraction} if fraction != 1.0 else {})}
    _assert_only_change(name, "truth_quick_128px.yaml", tmp_path, changes={stage: changes for stage in plain})
