"""timm backbones (``backbone="timm:<name>"``): grid, identity, weights, checkpoints, training, errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import timm
import torch

import siam
from siam.data.transforms import Preprocessing
from siam.errors import CheckpointError, ConfigError, SiamError
from siam.models.backbones import build_backbone

from .test_siam import _check_identity

CONVNEXT = "timm:convnext_atto"
EFFICIENTNET = "timm:efficientnet_b0"
NAMES = ("a0", "a1", "a2", "a3")


def _model(backbone: str, crop: int, **kw: object) -> siam.SIAM:
    return siam.build_model(backbone=backbone, attributes=NAMES, border=0,
                            preprocessing=Preprocessing(resize=crop, crop=crop), **kw)


@pytest.mark.parametrize("backbone", [CONVNEXT, EFFICIENTNET])
@pytest.mark.parametrize("crop", [64, 96])
def test_grid_follows_stride_and_input_and_identity_holds(backbone: str, crop: int) -> None:
    torch.manual_seed(crop)
    model = _model(backbone, crop).eval()
    spec = model.backbone.spec
    assert spec.stride == 32  # both networks downsample 5 times
    with torch.no_grad():
        model.template_head.templates.uniform_(0.0, 1.0)
        model.template_head.mixing.normal_()
        model.template_head.weight.normal_()
        model.template_head.bias.fill_(2.5)
        # channels and stride as the model really produces them
        features = model.backbone(torch.zeros(1, 3, crop, crop))
        x = torch.randn(3, 3, crop, crop)
        out = model(x)
    assert features.shape == (1, spec.out_channels, crop // 32, crop // 32)
    m = math.ceil(crop / spec.stride)
    assert model.config.grid == m and out.maps.shape == (3, len(NAMES), m, m)
    assert out.maps.abs().sum() > 0
    _check_identity(out, model.template_head)


def test_non_multiple_input_gives_the_ceil_grid() -> None:
    model = _model(EFFICIENTNET, 100).eval()  # 100 / 32 -> 4 (EfficientNet pads: ceil at every stride)
    with torch.no_grad():
        assert model.backbone(torch.zeros(1, 3, 100, 100)).shape[-2:] == (4, 4)
        assert model(torch.zeros(2, 3, 100, 100)).maps.shape == (2, len(NAMES), 4, 4)
    assert model.config.grid == 4


def test_channels_and_normalisation_come_from_the_model() -> None:
    net = build_backbone(name="timm:mobilenetv3_small_050")
    assert net.out_channels == 288 and net.spec.stride == 32
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 288, 2, 2)
    # a model whose weights expect other statistics gets them in its default preprocessing
    incep = siam.build_model(backbone="timm:inception_v3", attributes=NAMES)
    assert incep.preprocessing.mean == (0.5, 0.5, 0.5) and incep.preprocessing.std == (0.5, 0.5, 0.5)
    assert incep.preprocessing.crop == 450 and incep.config.grid == math.ceil(450 / incep.backbone.spec.stride)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_from_own_backbone_file(tmp_path: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = build_backbone(name=CONVNEXT)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(2)
    assert not torch.equal(build_backbone(name=CONVNEXT).body.net.stem_0.weight, source.body.net.stem_0.weight)
    loaded = build_backbone(name=CONVNEXT, pretrained=path)
    _same_weights(loaded, source)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), source.eval()(x), rtol=0, atol=0)


def test_pretrained_from_full_timm_model_file(tmp_path: Path) -> None:
    """A classification model's state dict (as timm or the hub saves it): the head is dropped and
    the last map equals the full model's ``forward_features``."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    full = timm.create_model("convnext_atto").eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    net = build_backbone(name=CONVNEXT, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), full.forward_features(x), rtol=0, atol=1e-6)


def _fake_hub(root: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<rev>/model.safetensors}."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / "abc123" / "model.safetensors"))


def test_pretrained_timm_reads_only_the_local_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(CheckpointError) as err:  # nothing cached: says which file, where; no download
        build_backbone(name=CONVNEXT, pretrained="timm")
    msg = str(err.value)
    assert "model.safetensors" in msg and "timm/convnext_atto.d2_in1k" in msg and str(tmp_path / "hub") in msg
    assert "convnext_atto_d2-01bb0f51.pth" in msg and "never downloads" in msg
    torch.manual_seed(4)
    full = timm.create_model("convnext_atto")
    _fake_hub(tmp_path / "hub", "timm/convnext_atto.d2_in1k", full.state_dict())
    for value in ("timm", True, "imagenet"):
        net = build_backbone(name=CONVNEXT, pretrained=value).eval()
        with torch.no_grad():
            x = torch.randn(1, 3, 64, 64)
            torch.testing.assert_close(net(x), full.eval().forward_features(x), rtol=0, atol=1e-6)


def test_weight_and_name_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match=r"weights file not found: '.*nope\.safetensors'.*convnext_atto"):
        build_backbone(name=CONVNEXT, pretrained=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"bad\.pth: could not be read as weights"):
        build_backbone(name=CONVNEXT, pretrained=bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"  # weights of another architecture
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t").state_dict().items()}, str(other))
    with pytest.raises(CheckpointError, match=r"weights do not fit timm backbone 'timm:convnext_atto'"):
        build_backbone(name=CONVNEXT, pretrained=other)
    with pytest.raises(ConfigError, match=r"unknown timm backbone 'timm:convnext_atoo'.*close matches: timm:convnext_atto"):
        siam.build_model(backbone="timm:convnext_atoo")
    with pytest.raises(ConfigError, match=r"unknown timm backbone 'timm:'"):
        build_backbone(name="timm:")
    with pytest.raises(ConfigError, match=r"unknown backbone 'vgg'.*'timm:<model>'"):
        siam.build_baseline(backbone="vgg")


def test_model_without_feature_map_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timm 1.0 architecture tried offers ``features_only``; a model that does not makes
    ``create_model`` raise, which becomes a ConfigError naming the model."""
    def refuse(name: str, **kwargs: object) -> None:
        assert kwargs["features_only"] is True and kwargs["out_indices"] == (-1,)
        raise RuntimeError(f"features_only not implemented for {name}")

    monkeypatch.setattr(timm, "create_model", refuse)
    with pytest.raises(ConfigError, match=r"timm model 'convnext_atto' does not expose a feature map.*features_only"):
        build_backbone(name=CONVNEXT)


def test_missing_timm_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(SiamError, match=r"pip install 'siam\[timm\]'"):
        build_backbone(name=CONVNEXT)


def test_training_config_checks_timm_names() -> None:
    from siam.training.config import config_from_dict, parse_override

    cfg = config_from_dict({"stage": "sun", "out": "x", "model": {"backbone": CONVNEXT, "pretrained": "timm"}})
    assert cfg.model.backbone == CONVNEXT and cfg.model.pretrained == "timm"
    # as `siam train --set model.backbone=timm:convnext_atto` gives it
    cfg = config_from_dict({"stage": "sun", "out": "x"}, overrides=[parse_override(f"model.backbone={CONVNEXT}")])
    assert cfg.model.backbone == CONVNEXT
    with pytest.raises(ConfigError, match=r"model\.backbone: got 'timm:no_such_net'; unknown timm backbone"):
        config_from_dict({"stage": "sun", "out": "x", "model": {"backbone": "timm:no_such_net"}})


def test_checkpoint_round_trip_keeps_the_timm_backbone(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = _model(EFFICIENTNET, 64, predict_variance=True).eval()
    path = siam.save_checkpoint(model, tmp_path / "m.safetensors")
    from siam.checkpoint import read_meta

    assert read_meta(path)["model"]["backbone"] == EFFICIENTNET
    loaded = siam.load_checkpoint(path)
    assert loaded.config == model.config and loaded.preprocessing == model.preprocessing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for name in ("maps", "presence", "contributions", "score", "variance"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0, msg=name)


def test_fixed_input_networks_get_their_size_or_a_clear_error() -> None:
    """ViT and Swin accept one input side (``fixed_input_size``); Swin returns NHWC maps."""
    model = siam.build_model(backbone="timm:swin_tiny_patch4_window7_224", attributes=NAMES, border=0).eval()
    assert model.preprocessing.crop == 224 and model.config.grid == 7  # 224 / 32
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        features = model.backbone(x)
        out = model(x)
    assert features.shape == (1, 768, 7, 7) and out.maps.shape == (1, len(NAMES), 7, 7)
    with pytest.raises(ConfigError, match=r"accepts only 224x224 px inputs, but the preprocessing crops 64 px"):
        _model("timm:vit_tiny_patch16_224", 64)


def test_nhwc_feature_networks_are_returned_nchw() -> None:
    """Some timm feature networks (Swin) return NHWC maps; f always hands on (B, C, h, w)."""
    from siam.models.timm_backbones import TimmFeatures

    class _Nhwc(torch.nn.Module):
        output_fmt = "NHWC"

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            return [x[:, :2].permute(0, 2, 3, 1)]  # (B, H, W, 2)

    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(TimmFeatures(_Nhwc())(x), x[:, :2], rtol=0, atol=0)


def test_onnx_export_of_a_timm_model_matches_pytorch(tmp_path: Path) -> None:
    from siam.export import check_onnx, export_onnx

    torch.manual_seed(6)
    model = _model(CONVNEXT, 64).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    assert check_onnx(model, path, batch_sizes=(1, 2)) < 1e-4
