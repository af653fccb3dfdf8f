from __future__ import annotations

import copy

import pytest
import torch

from siam.scoring import inference
from siam.scoring.inference import prepare_for_inference, resolve_precision
from tests.scoring.conftest import make_tiny_siam


@pytest.fixture()
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_fp32_path_matches_plain_forward_and_uses_channels_last(batch: torch.Tensor) -> None:
    plain = make_tiny_siam().eval()
    model, ctx = prepare_for_inference(copy.deepcopy(plain), "fp32", device="cpu")
    assert model.inference_precision == "fp32"
    conv = model.backbone.body[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    with torch.inference_mode(), ctx:
        got = model(batch)
        ref = plain(batch)
    # The SIAM heads see planar maps (their einsum is ~60x slower on channels_last maps).
    assert got.maps.is_contiguous() and model.attribute_head.conv.weight.is_contiguous()
    for name in ("score", "presence", "contributions", "maps", "contribution_maps"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-5, atol=1e-5)


def test_bf16_backbone_keeps_maps_within_2_percent_and_heads_in_fp32(batch: torch.Tensor) -> None:
    plain = make_tiny_siam().eval()
    model, ctx = prepare_for_inference(copy.deepcopy(plain), "bf16", device="cpu")
    assert model.inference_precision == "bf16"
    with torch.inference_mode(), ctx:
        got = model(batch)
        ref = plain(batch)
    assert got.maps.dtype == torch.float32 and got.score.dtype == torch.float32
    err = _rel(got.maps, ref.maps)
    assert 0 < err < 0.02, f"bf16 maps differ from fp32 by {err:.4f} (relative); bf16 must be active and < 2%"
    # The heads run in float32: the score decomposes exactly into bias + contributions.
    torch.testing.assert_close(got.score, got.bias + got.contributions.sum(1), rtol=0, atol=1e-5)
    # Same parameters and state-dict keys as the original model.
    assert list(model.state_dict()) == list(plain.state_dict())


def test_precision_round_trip_back_to_fp32(batch: torch.Tensor) -> None:
    model, _ = prepare_for_inference(make_tiny_siam(), "bf16", device="cpu")
    model, _ = prepare_for_inference(model, "fp32", device="cpu")
    ref = make_tiny_siam().eval()
    with torch.inference_mode():
        torch.testing.assert_close(model(batch).maps, ref(batch).maps, rtol=1e-5, atol=1e-5)


def test_auto_picks_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "bf16_is_native", lambda device: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(inference, "bf16_is_native", lambda device: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_bad_arguments_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; allowed: \['auto', 'fp32', 'bf16'\]"):
        prepare_for_inference(make_tiny_siam(), "fp16")
    with pytest.raises(ValueError, match="unknown device"):
        prepare_for_inference(make_tiny_siam(), "fp32", device="tpu")
    with pytest.raises(ValueError, match="expects a siam model"):
        prepare_for_inference(torch.nn.Linear(2, 2), "fp32")
