from __future__ import annotations

import pytest
import torch

import siam
from siam.models.heads import AttributeHead, TemplateHead


def _tiny(k: int = 5, **kw):
    names = [f"a{i}" for i in range(k)]
    return siam.build_model(backbone="tiny", attributes=names, **kw)


def _check_identity(out: siam.SIAMOutput, head: TemplateHead) -> None:
    """For every target t, the score, contributions and contribution maps against a float64
    recomputation from the maps A and g's raw parameters of that target (templates T, mixing a,
    weights w, bias b), not through the head's code:
    E_k = w_k (a_k1 T_k1 + a_k2 T_k2), c_k = sum_ij E_k[i, j] A_k[i, j], y = b + sum_k c_k."""
    A = out.maps.detach().double()  # (B, K, m, m)
    batch, k = A.shape[:2]
    assert out.scores.shape == (batch, head.num_targets)
    for t in range(head.num_targets):
        T = head.templates[t].detach().double()  # (K, 2, m, m)
        a = head.mixing[t].detach().double()  # (K, 2)
        w = head.weight[t].detach().double()  # (K,)
        b = float(head.bias[t].detach())
        E = torch.stack([w[i] * (a[i, 0] * T[i, 0] + a[i, 1] * T[i, 1]) for i in range(k)])  # (K, m, m)
        c = torch.tensor([[float((E[i] * A[n, i]).sum()) for i in range(k)] for n in range(batch)],
                         dtype=torch.float64)  # (B, K)
        y = b + c.sum(1)  # (B,)
        o = out.for_target(t)
        torch.testing.assert_close(o.score.double(), y, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.scores[:, t].double(), y, atol=1e-5, rtol=0)
        torch.testing.assert_close(o.contributions.double(), c, atol=1e-5, rtol=0)
        torch.testing.assert_close(o.contribution_maps.double(), E[None] * A, atol=1e-6, rtol=0)
        torch.testing.assert_close(head.effective_templates()[t].detach().double(), E, atol=1e-6, rtol=0)
        # the parts agree with each other: c_k is the sum of its map, y = b + the sum of all maps
        torch.testing.assert_close(o.contributions, o.contribution_maps.sum((2, 3)), atol=1e-5, rtol=0)
        torch.testing.assert_close(o.score, o.bias.detach() + o.contribution_maps.sum((1, 2, 3)), atol=1e-5, rtol=0)
        assert float(o.bias.detach()) == b


@pytest.mark.parametrize("batch,size", [(1, 64), (3, 96), (2, 128), (4, 75)])
def test_identity_random_weights(batch: int, size: int) -> None:
    torch.manual_seed(batch * 100 + size)
    model = _tiny(k=7, grid=8, border=1, bias=5.0)
    with torch.no_grad():
        for p in model.template_head.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    out = model(torch.randn(batch, 3, size, size))
    assert out.maps.shape == (batch, 7, 8, 8)
    assert out.presence.shape == (batch, 7)
    assert out.score.shape == (batch,)
    _check_identity(out, model.template_head)


def test_identity_after_optimizer_steps() -> None:
    torch.manual_seed(0)
    model = _tiny(k=4, grid=8, border=1, bias=5.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([2.0, 4.0, 6.0, 8.0])
    for _ in range(5):
        out = model(x)
        loss = ((out.score - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.project_()
    model.eval()
    out = model(x)
    # Training has moved the templates away from the degenerate start.
    assert out.contributions.abs().sum() > 0
    _check_identity(out, model.template_head)
    assert (model.template_head.templates >= 0).all()


def test_hand_set_weights_give_hand_computed_outputs() -> None:
    k, m = 2, 3
    head = TemplateHead(k, grid=m, template_init=0.0, bias=1.5)
    with torch.no_grad():
        head.templates.zero_()
        head.templates[0, 0, 0] = torch.tensor([[1.0, 0, 0], [0, 0, 0], [0, 0, 0]])
        head.templates[0, 0, 1] = torch.tensor([[0.0, 0, 0], [0, 0, 0], [0, 0, 2.0]])
        head.templates[0, 1, 0] = torch.ones(3, 3)
        head.templates[0, 1, 1] = torch.zeros(3, 3)
        head.mixing.copy_(torch.tensor([[1.0, -1.0], [0.5, -0.5]]))
        head.weight.copy_(torch.tensor([2.0, 1.0]))
    maps = torch.zeros(1, k, m, m)
    maps[0, 0, 0, 0] = 3.0  # attribute 0 top-left: +1 * 3 * w=2 -> +6
    maps[0, 0, 2, 2] = 1.0  # attribute 0 bottom-right: -1 * 2 * 1 * w=2 -> -4
    maps[0, 1] = 1.0  # attribute 1 everywhere: 0.5 * 9 * w=1 -> 4.5
    out = head(maps)
    assert out["contributions"].tolist() == [[[2.0, 4.5]]]  # (B, T, K)
    assert out["score"].item() == pytest.approx(1.5 + 2.0 + 4.5)
    expected_map0 = torch.zeros(3, 3)
    expected_map0[0, 0] = 6.0
    expected_map0[2, 2] = -4.0
    torch.testing.assert_close(out["contribution_maps"][0, 0, 0], expected_map0)
    torch.testing.assert_close(out["contribution_maps"][0, 0, 1], torch.full((3, 3), 0.5))
    E = head.effective_templates()
    torch.testing.assert_close(E[0, 0], torch.tensor([[2.0, 0, 0], [0, 0, 0], [0, 0, -4.0]]))


def test_two_targets_hand_set_weights_give_hand_computed_outputs() -> None:
    """Two targets over the same maps, each with its own templates, mixing, w and b."""
    head = TemplateHead(2, grid=2, num_targets=2, template_init=0.0, bias=[1.0, -2.0])
    with torch.no_grad():
        head.templates.zero_()
        head.templates[0, 0, 0] = torch.tensor([[1.0, 0], [0, 0]])  # target 0, attribute 0: top-left
        head.templates[1, 1, 1] = torch.ones(2, 2)  # target 1, attribute 1, negative template
        head.mixing.copy_(torch.tensor([[[1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [1.0, -3.0]]]))
        head.weight.copy_(torch.tensor([[2.0, 1.0], [1.0, 0.5]]))
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 3.0  # target 0: +1 * 1 * 3 * w=2 -> +6
    maps[0, 1] = 1.0  # target 1: -3 * 4 cells * w=0.5 -> -6
    out = head(maps)
    assert out["contributions"].tolist() == [[[6.0, 0.0], [0.0, -6.0]]]
    assert out["score"].tolist() == [[7.0, -8.0]]
    model = _tiny(k=2, grid=4, border=1, targets=("beauty", "safety"), bias=[3.0, 4.0])
    assert model.targets == ("beauty", "safety") and model.template_head.bias.tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="distinct"):
        _tiny(k=2, targets=("a", "a"))
    with pytest.raises(ValueError, match="one per target"):
        TemplateHead(2, grid=2, num_targets=2, bias=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("num_targets", [2, 3])
def test_identity_holds_per_target(num_targets: int) -> None:
    torch.manual_seed(num_targets)
    names = tuple(f"t{i}" for i in range(num_targets))
    model = _tiny(k=4, grid=6, border=1, targets=names, bias=[float(i) for i in range(num_targets)])
    with torch.no_grad():
        model.template_head.templates.uniform_(0.0, 1.0)
        model.template_head.mixing.normal_()
        model.template_head.weight.normal_()
        model.attribute_head.conv.weight.normal_(0.0, 0.5)
        model.attribute_head.conv.bias.fill_(0.05)
    out = model.eval()(torch.randn(3, 3, 64, 64))
    assert out.maps.abs().sum() > 0 and out.all_contribution_maps.shape == (3, num_targets, 4, 6, 6)
    _check_identity(out, model.template_head)
    # the targets really differ, and a name or an index picks the same one
    assert not torch.allclose(out.scores[:, 0], out.scores[:, 1])
    assert torch.equal(out.for_target(names[-1]).score, out.for_target(num_targets - 1).score)
    torch.testing.assert_close(model.effective_templates(names[1]), model.template_head.effective_templates()[1])
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        out.for_target("nope")


def test_attribute_head_hand_computed_presence_and_border() -> None:
    head = AttributeHead(1, 1, grid=4, border=1, presence="tanh")
    with torch.no_grad():
        head.conv.weight.fill_(1.0)
        head.conv.bias.fill_(0.0)
    feats = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) - 4.0  # some negative
    maps, presence = head(feats)
    expected = torch.relu(feats) * torch.tensor(
        [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(maps, expected)
    # centre values: 1, 2, 5, 6 -> mean 3.5
    assert presence.item() == pytest.approx(torch.tanh(torch.tensor(3.5)).item())
    head_s = AttributeHead(1, 1, grid=4, border=1, presence="sigmoid")
    head_s.load_state_dict(head.state_dict())
    assert head_s(feats)[1].item() == pytest.approx(torch.sigmoid(torch.tensor(3.5)).item())


def test_tanh_can_reach_absent_sigmoid_cannot() -> None:
    """Why tanh is the default: maps are >= 0, so sigmoid(mean) >= 0.5 always."""
    head_t = AttributeHead(2, 1, grid=3, border=0, presence="tanh")
    head_s = AttributeHead(2, 1, grid=3, border=0, presence="sigmoid")
    feats = torch.randn(16, 2, 3, 3)
    assert head_s(feats)[1].min() >= 0.5
    with torch.no_grad():
        head_t.conv.weight.fill_(-1.0)
        head_t.conv.bias.fill_(-1.0)
    assert head_t(feats.abs())[1].max() == 0.0


def test_templates_stay_nonnegative_with_projection() -> None:
    torch.manual_seed(1)
    model = _tiny(k=3, grid=8, border=1)
    opt = torch.optim.SGD(model.template_head.parameters(), lr=1.0)
    x = torch.randn(2, 3, 64, 64)
    for step in range(4):
        out = model(x)
        loss = out.score.sum() * (1 if step % 2 else -1) + (out.contributions**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.project_()
        assert (model.template_head.templates >= 0).all()
    # Without projection, the same large step would make some templates negative.
    opt.zero_grad()
    model.template_head.templates.sum().backward()  # gradient 1 everywhere: one step of -1
    opt.step()
    assert (model.template_head.templates < 0).any()
    model.project_()
    assert (model.template_head.templates >= 0).all()


def test_template_head_init_is_deterministic() -> None:
    torch.manual_seed(0)
    a = TemplateHead(33, grid=15, bias=4.2)
    torch.manual_seed(123)
    b = TemplateHead(33, grid=15, bias=4.2)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        torch.testing.assert_close(pa, pb)
    assert (a.templates == 0.01).all() and a.templates.shape == (1, 33, 2, 15, 15)
    assert a.mixing.tolist() == [[[0.5, -0.5]] * 33]
    torch.testing.assert_close(a.weight, torch.full((1, 33), 1 / 33))
    assert a.bias.tolist() == [pytest.approx(4.2)]
    two = TemplateHead(3, grid=4, num_targets=2, bias=[1.0, 7.0])
    assert two.templates.shape == (2, 3, 2, 4, 4) and (two.templates == 0.01).all()
    assert two.mixing.tolist() == [[[0.5, -0.5]] * 3] * 2
    assert two.bias.tolist() == [1.0, 7.0]


def test_two_templates_with_mixing_equal_one_effective_template() -> None:
    torch.manual_seed(2)
    head = TemplateHead(4, grid=5)
    with torch.no_grad():
        head.templates.uniform_(0, 1)
        head.mixing.normal_()
        head.weight.normal_()
    maps = torch.rand(3, 4, 5, 5)
    out = head(maps)
    E = head.effective_templates()
    direct = head.bias + (E[None] * maps[:, None]).sum((2, 3, 4))  # (B, T=1)
    torch.testing.assert_close(out["score"], direct, atol=1e-5, rtol=0)
    w, a, t = head.weight[0], head.mixing[0], head.templates[0]
    manual = torch.stack([w[i] * (a[i, 0] * t[i, 0] + a[i, 1] * t[i, 1]) for i in range(4)])[None]
    torch.testing.assert_close(E, manual)


def test_gradients_reach_every_trainable_parameter() -> None:
    torch.manual_seed(3)
    model = _tiny(k=3, grid=8, border=1, predict_variance=True)
    with torch.no_grad():  # leave the symmetric start so that every gradient is non-zero
        model.template_head.templates.uniform_(0.0, 0.1)
        model.template_head.var_weight.normal_()
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    loss = out.score.sum() + out.presence.sum() + out.variance.sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reached {name}"


def test_frozen_backbone_gets_no_gradient() -> None:
    model = _tiny(k=3, grid=8, border=1)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    for p in model.attribute_head.parameters():
        p.requires_grad_(False)
    out = model(torch.randn(2, 3, 64, 64))
    out.score.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.attribute_head.parameters())
    assert model.template_head.templates.grad is not None


def test_resnet50_grid_sizes() -> None:
    from siam.models.backbones import build_backbone

    net = build_backbone(name="resnet50").eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 450, 450)).shape == (1, 2048, 15, 15)
        assert net(torch.zeros(1, 3, 500, 500)).shape == (1, 2048, 16, 16)
    # The model adaptively pools a 16x16 backbone grid to its 15x15 templates (authors' code).
    model = siam.build_model(backbone="resnet50").eval()
    assert model.config.grid == 15
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 500, 500))
    assert out.maps.shape == (1, 33, 15, 15)
    # Only the central 11x11 counts.
    assert (out.maps[..., :2, :] == 0).all() and (out.maps[..., -2:, :] == 0).all()
    assert (out.maps[..., :, :2] == 0).all() and (out.maps[..., :, -2:] == 0).all()


def test_default_vocabulary_is_the_papers_33() -> None:
    model = siam.build_model(backbone="tiny")
    assert model.attributes == siam.SUN33
    assert len(model.attributes) == 33
    assert model.attributes[12] == "ice_snow"
    assert model.attribute_head.conv.out_channels == 33
    assert model.attribute_head.conv.in_channels == model.backbone.out_channels


def test_custom_vocabulary_sets_k() -> None:
    model = siam.build_model(backbone="tiny", attributes=["water", "road"], grid=4, border=0)
    out = model(torch.randn(1, 3, 32, 32))
    assert out.maps.shape == (1, 2, 4, 4)


@pytest.mark.parametrize(
    "shape,match",
    [((1, 1, 64, 64), r"\(B, 3, H, W\).*\(1, 1, 64, 64\)"), ((1, 4, 64, 64), r"\(1, 4, 64, 64\)"), ((3, 64, 64), r"\(3, 64, 64\)")],
)
def test_wrong_channel_count_is_a_clear_error(shape, match) -> None:
    model = _tiny(k=2, grid=4, border=0)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg'.*allowed.*resnet50"):
        siam.build_model(backbone="vgg")
    with pytest.raises(ValueError, match=r"unknown backbone"):
        siam.build_baseline(backbone="nope")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"attributes": []}, "at least one"),
        ({"attributes": ["a", "a"]}, "unique"),
        ({"attributes": "trees"}, "single string"),
        ({"presence": "relu"}, "tanh' or 'sigmoid"),
        ({"grid": 4, "border": 2}, "border must satisfy"),
        ({"template_init": -1.0}, "template_init"),
    ],
)
def test_bad_model_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        siam.build_model(backbone="tiny", **kwargs)


def test_imagenet_weights_never_download(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from siam.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"not cached.*never downloads.*resnet18-f37072fd.pth"):
        siam.build_model(backbone="resnet18", pretrained="imagenet")


def test_imagenet_weights_from_cache_and_file(tmp_path, monkeypatch) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    m1 = siam.build_model(backbone="resnet18", pretrained="imagenet")
    torch.testing.assert_close(m1.backbone.body[0].weight, ref.conv1.weight)
    torch.testing.assert_close(m1.backbone.body[7][1].conv2.weight, ref.layer4[1].conv2.weight)
    save_file(ref.state_dict(), str(tmp_path / "r18.safetensors"))
    m2 = siam.build_model(backbone="resnet18", pretrained=tmp_path / "r18.safetensors")
    torch.testing.assert_close(m2.backbone.body[4][0].conv1.weight, ref.layer1[0].conv1.weight)
    from siam.errors import CheckpointError

    with pytest.raises(CheckpointError, match="do not fit backbone 'resnet50'"):
        siam.build_model(backbone="resnet50", pretrained=tmp_path / "r18.safetensors")


def test_template_roughness_hand_computed() -> None:
    model = siam.build_model(backbone="tiny", attributes=("a", "b"), grid=3, border=0)
    head = model.template_head
    with torch.no_grad():
        head.templates.zero_()
        head.templates[0, 0, 0] = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
        head.mixing.copy_(torch.tensor([[1.0, -1.0], [1.0, -1.0]]))
        head.weight.fill_(1.0)
    # E_0 = the pattern above, E_1 = 0. Vertical diffs: 1 (the 1 vs the 0 below), 2 (the 2 vs the
    # 0 above); horizontal: 1, 1 (the 1 vs both neighbours), 2 (the 2 vs its left neighbour).
    want = (1 + 4) + (1 + 1 + 4)
    assert float(model.template_roughness().detach()) == pytest.approx(want)
    # Constant templates are perfectly smooth.
    with torch.no_grad():
        head.templates.fill_(0.3)
        head.mixing.copy_(torch.tensor([[0.7, -0.2], [0.1, 0.4]]))
    assert float(model.template_roughness().detach()) == pytest.approx(0.0, abs=1e-10)
