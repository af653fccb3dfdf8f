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
