from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import siam
from siam.cli import main
from siam.data.transforms import Preprocessing
from tests.scoring.conftest import ATTRIBUTES, make_tiny_siam


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_siam_onnx_matches_pytorch_at_batch_1_and_7(tmp_path: Path) -> None:
    model = make_tiny_siam(seed=3)
    ckpt = siam.save_checkpoint(model, tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # dynamic batch axis
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["siam"])
    assert meta["attributes"] == ATTRIBUTES and meta["preprocessing"]["crop"] == 128
    session = _session(out)
    names = [o.name for o in session.get_outputs()]
    assert names == ["score", "presence", "contributions", "maps", "contribution_maps"]
    model = siam.load_checkpoint(ckpt)
    for batch in (1, 7):
        x = torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))
        got = dict(zip(names, session.run(names, {"image": x.numpy()})))
        with torch.inference_mode():
            ref = model(x)
        for name in names:
            expected = getattr(ref, name).numpy()
            assert got[name].shape == expected.shape
            np.testing.assert_allclose(got[name], expected, rtol=0, atol=1e-4, err_msg=name)
        # The exported score keeps SIAM's decomposition.
        np.testing.assert_allclose(got["score"], ref.bias.item() + got["contributions"].sum(1), atol=1e-4)
        assert np.ptp(got["score"]) > 0 or batch == 1


def test_baseline_onnx_exports_score_and_cam(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = siam.build_baseline(backbone="tiny", bias=4.0, predict_variance=True,
                                preprocessing=Preprocessing(resize=96, crop=96))
    ckpt = siam.save_checkpoint(model, tmp_path / "b.safetensors")
    out = tmp_path / "b.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    session = _session(out)
    x = torch.randn(7, 3, 96, 96)
    score, cam, variance = session.run(["score", "cam", "variance"], {"image": x.numpy()})
    with torch.inference_mode():
        ref = siam.load_checkpoint(ckpt)(x)
    np.testing.assert_allclose(score, ref.score.numpy(), atol=1e-4)
    np.testing.assert_allclose(cam, ref.cam.numpy(), atol=1e-4)
    np.testing.assert_allclose(variance, ref.variance.numpy(), atol=1e-4)


def test_export_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = siam.save_checkpoint(make_tiny_siam(), tmp_path / "m.safetensors")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "unknown --format 'tflite'; allowed: ['onnx']" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.pb")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_two_target_onnx_matches_pytorch_per_target(tmp_path: Path) -> None:
    model = make_tiny_siam(seed=4, crop=64, targets=("beauty", "safety"))
    ckpt = siam.save_checkpoint(model, tmp_path / "m2.safetensors")
    out = tmp_path / "m2.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["siam"])
    assert meta["model"]["targets"] == ["beauty", "safety"]
    session = _session(out)
    names = [o.name for o in session.get_outputs()]
    assert names == ["score", "presence", "contributions", "maps", "contribution_maps",
                     "scores", "all_contributions", "all_contribution_maps"]
    model = siam.load_checkpoint(ckpt)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = dict(zip(names, session.run(names, {"image": x.numpy()})))
    with torch.inference_mode():
        ref = model(x)
    for name in names:
        np.testing.assert_allclose(got[name], getattr(ref, name).numpy(), rtol=0, atol=1e-4, err_msg=name)
    assert got["scores"].shape == (3, 2) and np.abs(got["scores"][:, 0] - got["scores"][:, 1]).min() > 1e-3
    # Each target's exported score keeps its own decomposition: score_t = b_t + sum_i c_t,i.
    np.testing.assert_allclose(got["scores"], ref.biases.detach().numpy() + got["all_contributions"].sum(2), atol=1e-4)
    np.testing.assert_allclose(got["all_contribution_maps"].sum((3, 4)), got["all_contributions"], atol=1e-4)
    np.testing.assert_allclose(got["score"], got["scores"][:, 0], atol=1e-6)
