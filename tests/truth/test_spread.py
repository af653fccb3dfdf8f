"""siam.truth.spread: g refit over fixed inputs, its spread over seeds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from siam.errors import ConfigError
from siam.truth.oracle import HeadRecipe, fit_head, head_recovery
from siam.truth.spread import main, parse_variant, refit_spread


def _world(n: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = np.linspace(-1.0, 1.0, 4)[:, None] * np.ones((4, 4))
    templates = np.stack([2.0 * rows, np.full((4, 4), -1.0)]).astype(np.float32)  # (K=2, 4, 4)
    x = (rng.random((n, 2, 4, 4)) < 0.4).astype(np.float32)  # (N, K, m, m) coverage
    y = 4.0 + (x * templates).sum((1, 2, 3)) + rng.normal(0, 0.1, n)
    return x, y.astype(np.float32), SimpleNamespace(attributes=["a", "b"], templates=templates)


def test_refit_spread_is_fit_head_per_seed_and_its_sd_is_ddof_1() -> None:
    x, y, truth = _world(96, 0)
    x_te, _, _ = _world(48, 1)
    recipe = HeadRecipe(epochs=2, batch_size=16, lr=0.05, hflip=False)
    r = refit_spread(x, y, x_te, x_te, truth, ["a", "b"], recipe=recipe, seeds=[0, 1, 2], observed_share=0.0)
    own = [head_recovery(fit_head(x, y, recipe=recipe, seed=s), x_te, x_te, truth, ["a", "b"], observed_share=0.0)
           for s in (0, 1, 2)]
    assert r["template_r"]["values"] == [o["template_r"] for o in own]
    assert r["template_r"]["sd"] == pytest.approx(float(np.std([o["template_r"] for o in own], ddof=1)))
    assert r["template_r_per_attribute"]["a"] == [o["per_attribute"]["template_r"]["a"] for o in own]
    # only 'a' varies in space, so template_r is 'a''s alone; the seeds differ (data order) ...
    assert set(r["template_r_per_attribute"]) == {"a"} and len(set(r["template_r"]["values"])) == 3
    # ... and the same seed gives the same refit, value for value
    again = refit_spread(x, y, x_te, x_te, truth, ["a", "b"], recipe=recipe, seeds=[0, 1, 2], observed_share=0.0)
    assert again["template_r"] == r["template_r"]


def test_parse_variant_takes_head_recipe_fields_and_refuses_others() -> None:
    assert parse_variant("head18:epochs=18,template_smoothness=3") == ("head18", {"epochs": 18, "template_smoothness": 3})
    assert parse_variant("base") == ("base", {})
    assert parse_variant("noflip:hflip=false,lr=0.5") == ("noflip", {"hflip": False, "lr": 0.5})
    with pytest.raises(ConfigError, match="not KEY=VALUE with KEY one of"):
        parse_variant("x:epoch=3")
    with pytest.raises(ConfigError, match="give it a name"):
        parse_variant(":epochs=3")


def test_the_command_refuses_a_folder_that_is_not_a_truth_run(tmp_path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    assert "is not a finished 'siam truth --out DIR' run" in capsys.readouterr().err


def test_the_command_leaves_the_callers_thread_count_as_it_was(tmp_path, monkeypatch) -> None:
    import torch

    import siam.truth.spread as spread

    def fake_run(args):  # _run sets one thread for itself, then fails
        torch.set_num_threads(1)
        raise ConfigError("stop")

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(spread, "_run", fake_run)
        assert main([str(tmp_path)]) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
