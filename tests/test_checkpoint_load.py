"""load_checkpoint builds the backbone without random initialisation and assigns the saved tensors
(issue 7): the loaded model must still equal the saved one exactly, and the strict key/shape checks
must still give clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save

import siam
from siam.checkpoint import read_meta
from siam.errors import CheckpointError


def _siam(**kw: object) -> siam.SIAM:
    torch.manual_seed(0)
    model = siam.build_model(backbone="tiny", attributes=["water", "road", "trees"], grid=8, border=1, **kw)
    with torch.no_grad():
        model.template_head.templates.uniform_(0, 1)
        model.template_head.mixing.uniform_(-1, 1)
        for p in model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the initial values
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("kind", ["siam", "siam_variance", "baseline"])
def test_loaded_model_equals_the_saved_one_exactly(tmp_path, kind: str) -> None:
    if kind == "baseline":
        torch.manual_seed(0)
        model = siam.build_baseline(backbone="tiny", bias=2.0).eval()
    else:
        model = _siam(predict_variance=kind == "siam_variance")
    path = siam.save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = siam.load_checkpoint(path)
    saved, got = model.state_dict(), loaded.state_dict()
    assert saved.keys() == got.keys()
    for k in saved:
        assert got[k].dtype == saved[k].dtype and torch.equal(got[k], saved[k]), k
    # The non-persistent border mask is computed as in a fresh build; the weights are trainable.
    assert all(p.requires_grad for p in loaded.parameters())
    for (name, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers()):
        assert torch.equal(a, b), name
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, out = model(x), loaded(x)
    torch.testing.assert_close(out.score, want.score, atol=0, rtol=0)
    if kind != "baseline":
        torch.testing.assert_close(out.maps, want.maps, atol=0, rtol=0)
    # The loaded weights are its own memory, not shared with the file's tensors.
    p = next(loaded.parameters())
    with torch.no_grad():
        p.add_(1.0)
    assert not torch.equal(p, next(model.parameters()))


@pytest.mark.parametrize("builder", ["siam", "baseline"])
def test_loading_does_no_random_initialisation(tmp_path, builder: str) -> None:
    model = _siam() if builder == "siam" else siam.build_baseline(backbone="tiny", bias=2.0)
    path = siam.save_checkpoint(model, tmp_path / "m.safetensors")
    # Building a model draws its initial weights from the global RNG ...
    before = torch.get_rng_state()
    siam.checkpoint.model_from_meta(read_meta(path))
    assert not torch.equal(torch.get_rng_state(), before)
    # ... loading one does not: nothing is initialised only to be overwritten.
    before = torch.get_rng_state()
    loaded = siam.load_checkpoint(path)
    assert torch.equal(torch.get_rng_state(), before)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # The mode is scoped: a model built afterwards is initialised again.
    fresh = siam.checkpoint.model_from_meta(read_meta(path))
    assert torch.isfinite(fresh.backbone.body[0][0].weight).all() and fresh.backbone.body[0][0].weight.std() > 0


def _rewrite(tmp_path, path, change) -> str:
    state = load_file(str(path))
    change(state)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(save(state, metadata={"siam": json.dumps(read_meta(path))}))
    return str(bad)


def test_missing_unexpected_and_misshaped_weights_are_clear_errors(tmp_path) -> None:
    path = siam.save_checkpoint(_siam(), tmp_path / "m.safetensors")
    conv = next(k for k in load_file(str(path)) if k.startswith("backbone.") and k.endswith("weight"))
    with pytest.raises(CheckpointError, match=r"(?s)weights do not match.*Missing key.*" + conv.replace(".", r"\.")):
        siam.load_checkpoint(_rewrite(tmp_path, path, lambda s: s.pop(conv)))
    with pytest.raises(CheckpointError, match=r"(?s)weights do not match.*Unexpected key.*extra\.weight"):
        siam.load_checkpoint(_rewrite(tmp_path, path, lambda s: s.update({"extra.weight": torch.zeros(2)})))

    def reshape(s: dict[str, torch.Tensor]) -> None:
        s[conv] = torch.zeros(s[conv].shape[0] + 1, *s[conv].shape[1:])

    with pytest.raises(CheckpointError, match=r"(?s)weights do not match.*size mismatch.*" + conv.replace(".", r"\.")):
        siam.load_checkpoint(_rewrite(tmp_path, path, reshape))
    with pytest.raises(CheckpointError, match=r"(?s)weights do not match.*size mismatch.*templates"):
        siam.load_checkpoint(_rewrite(tmp_path, path, lambda s: s.update(
            {"template_head.templates": torch.zeros(3, 2, 7, 7)})))


def test_half_precision_weights_are_cast_like_a_copying_load(tmp_path) -> None:
    model = _siam()
    path = siam.save_checkpoint(model, tmp_path / "m.safetensors")
    half = _rewrite(tmp_path, path, lambda s: s.update({k: v.half() for k, v in s.items() if v.is_floating_point()}))
    loaded = siam.load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, ref[k].half().float(), atol=0, rtol=0)


def test_one_target_model_written_before_several_targets_loads_with_the_same_outputs() -> None:
    """tests/fixtures/one_target_v1.safetensors was written by the version before several targets
    (g's parameters without a target axis); it loads as T = 1 and computes what that version did."""
    from pathlib import Path

    from safetensors.torch import load_file

    from siam.checkpoint import load_checkpoint

    here = Path(__file__).parent / "fixtures"
    model = load_checkpoint(here / "one_target_v1.safetensors").eval()
    assert model.targets == ("score",) and model.template_head.templates.shape[0] == 1
    ref = load_file(str(here / "one_target_v1_outputs.safetensors"))
    with torch.no_grad():
        out = model(ref["x"])
    for name in ("score", "contributions", "contribution_maps", "maps", "presence", "variance"):
        torch.testing.assert_close(getattr(out, name), ref[name], atol=1e-6, rtol=0, msg=name)
    assert out.score.abs().min() > 0 and out.contributions.abs().sum() > 0  # not a trivial fixture
