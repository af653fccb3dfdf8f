from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from siam.data.transforms import eval_transform
from siam.explain.faithfulness import faithfulness, gradcam_maps

from .conftest import PRE, make_image


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    tf = eval_transform(PRE)
    return torch.stack([tf(make_image(s, (80, 70))) for s in range(2)])  # (2, 3, 64, 64)


@pytest.fixture(scope="module")
def result(model, baseline, images):
    return faithfulness(model, images, baseline=baseline, steps=4, seed=0)


def test_gradcam_of_a_linear_regressor_is_its_positive_cam(baseline, images) -> None:
    """score = mean(w . F) + b, so d score / dF_c = w_c / (h w) everywhere and Grad-CAM is
    ReLU(CAM - b) / (h w), min-max scaled and resized to the input by pytorch_grad_cam."""
    import cv2

    gc = gradcam_maps(baseline, images)
    assert gc.shape == (2, 64, 64)
    with torch.no_grad():  # CAM - b = w . F, computed in float64 (CAM itself is ~5 +- 1e-3)
        feats = baseline.backbone(images).double()  # (2, C, 8, 8)
        evidence = torch.einsum("bchw,c->bhw", feats, baseline.regressor.weight[0].double()).numpy()
    def minmax(a: np.ndarray) -> np.ndarray:  # pytorch_grad_cam's scaling, epsilon included
        a = a - a.min()
        return a / (1e-7 + a.max())

    for i in range(2):
        pos = np.maximum(evidence[i] / evidence[i].size, 0)  # the 1/(h w) matters next to the 1e-7
        expected = minmax(cv2.resize(minmax(pos).astype(np.float32), (64, 64)))
        np.testing.assert_allclose(gc[i], expected, atol=1e-5)


def test_curve_invariants(result) -> None:
    assert result["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert set(result["methods"]) == {"siam", "siam_random", "baseline_gradcam", "baseline_cam_abs",
                                      "baseline_random"}
    dele, ins = result["deletion"], result["insertion"]
    groups = {"siam": ["siam", "siam_random"], "baseline": ["baseline_gradcam", "baseline_cam_abs", "baseline_random"]}
    for methods in groups.values():
        ends = [dele["curves"][m][-1] for m in methods]
        assert max(ends) - min(ends) < 1e-6  # everything deleted: the same image for every order
        for m in methods:
            assert dele["curves"][m][0] == 0.0  # nothing deleted
            assert ins["curves"][m][-1] == 0.0  # everything revealed
            assert ins["curves"][m][0] == pytest.approx(dele["curves"][m][-1], abs=1e-6)
            assert dele["auc"][m] == pytest.approx(np.trapezoid(dele["curves"][m], result["fractions"]))
            assert np.mean(dele["per_image_auc"][m]) == pytest.approx(dele["auc"][m])
    assert dele["auc_vs_random"]["siam_random"] == 1.0
    assert dele["auc_vs_random"]["siam"] == pytest.approx(dele["auc"]["siam"] / dele["auc"]["siam_random"])
    assert result["higher_is_better"] == {"deletion": True, "insertion": False}


def test_siam_order_is_by_abs_total_contribution(model, images, result) -> None:
    """Step 1 of 4 deletes the 16 cells with the largest |total contribution| of each image."""
    with torch.no_grad():
        out = model(images)
        order = torch.argsort(-out.total_map.abs().reshape(2, -1), dim=1, stable=True)
        mask = torch.zeros(2, 64)
        mask.scatter_(1, order[:, :16], 1.0)
        mask = F.interpolate(mask.reshape(2, 1, 8, 8), size=(64, 64), mode="nearest")
        deleted = model(images * (1 - mask)).score
    expected = (deleted - out.score).abs().numpy()
    assert result["deletion"]["curves"]["siam"][1] == pytest.approx(float(expected.mean()), abs=1e-6)


def test_seeded_and_fill(model, images) -> None:
    a = faithfulness(model, images[:1], steps=2, seed=1, benchmarks=("deletion",))
    b = faithfulness(model, images[:1], steps=2, seed=1, benchmarks=("deletion",))
    c = faithfulness(model, images[:1], steps=2, seed=2, benchmarks=("deletion",))
    assert a["deletion"] == b["deletion"]
    assert a["deletion"]["curves"]["siam_random"] != c["deletion"]["curves"]["siam_random"]
    assert "insertion" not in a and "baseline_gradcam" not in a["methods"]
    blur = faithfulness(model, images[:1], steps=2, seed=1, fill="blur", benchmarks=("deletion",))
    assert blur["fill"] == "blur"
    assert blur["deletion"]["curves"]["siam"][-1] != a["deletion"]["curves"]["siam"][-1]


def test_training_mode_restored_and_errors(images, baseline) -> None:
    from .conftest import make_siam

    m = make_siam().train()
    faithfulness(m, images[:1], steps=1, benchmarks=("deletion",))
    assert m.training
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        faithfulness(m, images, steps=0)
    with pytest.raises(ValueError, match="subset of"):
        faithfulness(m, images, benchmarks=("auc",))
    with pytest.raises(ValueError, match="fill must be"):
        faithfulness(m, images, fill="black")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="siam_model must be a SIAM"):
        faithfulness(baseline, images)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline must be a Baseline"):
        faithfulness(m, images, baseline=m)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        faithfulness(m, images[0])
