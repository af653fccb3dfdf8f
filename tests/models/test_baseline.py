from __future__ import annotations

import torch

import siam


def test_baseline_cam_averages_to_score() -> None:
    torch.manual_seed(0)
    model = siam.build_baseline(backbone="tiny", bias=5.5).eval()
    x = torch.randn(3, 3, 64, 64)
    out = model(x)
    assert out.score.shape == (3,)
    assert out.cam.shape == (3, 8, 8)
    torch.testing.assert_close(out.score, out.cam.mean((1, 2)), atol=1e-5, rtol=0)
    # The same as a linear regressor on globally pooled features.
    feats = model.backbone(x).mean((2, 3))
    torch.testing.assert_close(out.score, model.regressor(feats)[:, 0], atol=1e-5, rtol=0)


def test_baseline_hand_set_regressor() -> None:
    model = siam.build_baseline(backbone="tiny").eval()
    with torch.no_grad():
        model.regressor.weight.zero_()
        model.regressor.bias.fill_(3.25)
    out = model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(out.score, torch.full((2,), 3.25))
    torch.testing.assert_close(out.cam, torch.full((2, 4, 4), 3.25))


def test_baseline_variance_output_is_positive() -> None:
    model = siam.build_baseline(backbone="tiny", predict_variance=True).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.variance is not None and (out.variance > 0).all()


def test_baseline_with_two_targets_regresses_each_with_its_own_weights() -> None:
    torch.manual_seed(0)
    model = siam.build_baseline(backbone="tiny", targets=("a", "b"), bias=[2.0, -1.0], predict_variance=True).eval()
    assert model.targets == ("a", "b") and model.regressor.weight.shape[0] == 4  # 2 scores, 2 variances
    assert model.regressor.bias[:2].tolist() == [2.0, -1.0]
    x = torch.randn(3, 3, 64, 64)
    out = model(x)
    assert out.scores.shape == (3, 2) and out.cams.shape == (3, 2, 8, 8) and out.variances.shape == (3, 2)
    torch.testing.assert_close(out.scores, out.cams.mean((2, 3)), atol=1e-5, rtol=0)
    pooled = model.backbone(x).mean((2, 3))  # (B, C)
    lin = model.regressor(pooled)  # (B, 4): w_t . GAP(F) + b_t, then the variances' pre-activations
    torch.testing.assert_close(out.scores, lin[:, :2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.variances, torch.nn.functional.softplus(lin[:, 2:]), atol=1e-6, rtol=0)
    # The one-target view is target 0; for_target shows another by name.
    torch.testing.assert_close(out.score, out.scores[:, 0])
    b = out.for_target("b")
    assert torch.equal(b.score, out.scores[:, 1]) and torch.equal(b.cam, out.cams[:, 1])
    assert torch.equal(b.variance, out.variances[:, 1])
    model.set_bias(0.5)
    assert model.regressor.bias[:2].tolist() == [0.5, 0.5]
    try:
        model.set_bias([1.0, 2.0, 3.0])
    except ValueError as e:
        assert "one value or 2" in str(e)
    else:
        raise AssertionError("set_bias accepted 3 values for 2 targets")


def test_one_target_baseline_written_before_several_targets_loads_with_the_same_outputs() -> None:
    """tests/fixtures/baseline_one_target_v1.safetensors: written by the one-output Baseline."""
    from pathlib import Path

    from safetensors.torch import load_file

    here = Path(__file__).parent.parent / "fixtures"
    model = siam.load_checkpoint(here / "baseline_one_target_v1.safetensors").eval()
    assert model.targets == ("score",) and model.regressor.weight.shape[0] == 2
    ref = load_file(str(here / "baseline_one_target_v1_outputs.safetensors"))
    with torch.no_grad():
        out = model(ref["x"])
    for name in ("score", "cam", "variance"):
        torch.testing.assert_close(getattr(out, name), ref[name], atol=1e-6, rtol=0, msg=name)
    assert (out.score - 4.5).abs().min() > 1e-5  # the features matter: not just the bias
