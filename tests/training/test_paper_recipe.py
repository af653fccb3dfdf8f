"""configs/paper.yaml keeps its meaning: every stage's resolved config is pinned here, key by key.

A changed default, a new key or an edited recipe value changes a resolved config and fails this
test. If the change is meant (e.g. a new option whose default is the paper's behaviour), add the
key with the paper's value below, so that the paper's recipe is restated on purpose, never silently.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from siam.training.config import STAGES, load_config

ROOT = Path(__file__).resolve().parents[2]

#: The paper's recipe (Marcos, Lobry & Tuia 2019, Sec. 4.1) as every stage resolves it; only
#: ``out`` (the run folder) is not part of it.
_COMMON: dict[str, Any] = {
    "init_from": None,
    "attributes": None,
    "data": {
        "root": None, "sun": "data/sun_attributes", "son": "data/scenic_or_not", "batch_size": 20,
        "son_batch_size": 20, "val_batch_size": 40, "num_workers": 8, "cache": False, "max_bad_fraction": 0.01,
        "limit_train": None, "limit_val": None, "split_seed": 0,
        "balanced_sampling": None,  # the paper: plain shuffling
        "masks": None, "mask_fraction": 1.0,  # mask supervision is off (optim.mask_weight 0)
    },
    "model": {
        "backbone": "resnet50", "pretrained": "imagenet", "grid": 15, "border": 2, "presence": "tanh",
        "presence_denominator": "centre",
        "presence_pooling": "mean", "presence_lse_r": 10.0,  # the paper: the mean (lse is an option)
        "template_init": 0.01, "predict_variance": False,
    },
    # mean/std null = the backbone's (ImageNet's for ResNet-50)
    "preprocessing": {"resize": 500, "crop": 450, "max_rotation": 5.0, "hflip": True, "mean": None, "std": None},
    "optim": {
        "lr": 0.001, "weight_decay": 0.0, "lr_schedule": "step", "lr_decay_every": 10, "lr_decay_gamma": 0.1,
        "son_weight": 0.1, "son_weight_mode": "fixed", "template_l1": 0.0, "template_l1_mode": "fixed",
        "template_smoothness": 0.0, "variance_weight": 0.0,
        "presence_pos_weight": "none",  # the paper: an unweighted BCE
        "mask_weight": 0.0,  # the paper: image-level labels only
        "head_warmup_epochs": 0,  # the paper: f trains from the first step
    },
    "trainer": {
        "max_epochs": 30, "max_steps": -1, "accelerator": "auto", "devices": "auto", "num_nodes": 1,
        "strategy": "auto", "precision": "32-true", "channels_last": False, "checkpoint_every_n_steps": 500,
        "log_every_n_steps": 50, "val_every_n_epochs": 1, "progress_bar": True, "seed": 0,
        "deterministic": "warn", "num_threads": None,
    },
}

#: What each stage changes (configs/paper.yaml's ``stages`` section).
_STAGES: dict[str, dict[str, dict[str, Any]]] = {
    "sun": {"trainer": {"max_epochs": 30}},
    "son-head": {"trainer": {"max_epochs": 5}, "optim": {"lr_decay_every": 3}},
    "joint": {"trainer": {"max_epochs": 10}, "optim": {"lr": 0.0001, "lr_decay_every": 5}},
    "baseline": {"trainer": {"max_epochs": 10}, "optim": {"lr": 0.0001, "lr_decay_every": 5}},
}


def _expected(stage: str) -> dict[str, Any]:
    want = copy.deepcopy(_COMMON)
    for section, values in _STAGES[stage].items():
        want[section].update(values)
    return {"stage": stage, **want}


def _diff(got: dict[str, Any], want: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(got) | set(want), key=str):
        g, w = got.get(key, "<absent>"), want.get(key, "<absent>")
        if isinstance(g, dict) and isinstance(w, dict):
            out += _diff(g, w, f"{prefix}{key}.")
        elif g != w:
            out.append(f"{prefix}{key}: resolved {g!r}, pinned {w!r}")
    return out


@pytest.mark.parametrize("stage", STAGES)
def test_paper_recipe_resolves_to_the_pinned_config(stage: str) -> None:
    got = load_config(ROOT / "configs" / "paper.yaml", stage=stage).to_dict()
    got.pop("out")
    problems = _diff(got, _expected(stage))
    assert not problems, (
        f"configs/paper.yaml ({stage}) no longer resolves to the paper's recipe: " + "; ".join(problems)
        + ". If this is meant, pin the key's paper value in tests/training/test_paper_recipe.py."
    )


def test_the_pin_catches_a_departure() -> None:
    """The comparison names a changed value (here: a rare-attribute option) and a new key."""
    got = load_config(ROOT / "configs" / "paper.yaml", stage="sun",
                      overrides=["optim.presence_pos_weight=balanced"]).to_dict()
    got.pop("out")
    got["optim"]["new_key"] = 1.0
    assert _diff(got, _expected("sun")) == [
        "optim.new_key: resolved 1.0, pinned '<absent>'",
        "optim.presence_pos_weight: resolved 'balanced', pinned 'none'",
    ]
