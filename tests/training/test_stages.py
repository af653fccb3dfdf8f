"""Stages on tiny in-memory data: what each trains, the joint loss, projection, init and export."""

from __future__ import annotations

import re

from pathlib import Path

import lightning as L
import pytest
import torch

import siam
from siam.data.datamodule import SiamDataModule
from siam.data.samples import collate
from siam.training.engine import fit, prepare_model
from siam.training.losses import sun_loss
from siam.training.module import SiamModule

from .helpers import NAMES, samples, tiny_config


def _dm(stage: str, n: int = 24) -> SiamDataModule:
    sets = {"sun": samples("sun", n, 1), "son": samples("son", n, 2)}
    use = {"sun": ("sun",), "son-head": ("son",), "joint": ("sun", "son"), "baseline": ("son",)}[stage]
    return SiamDataModule(train={k: sets[k] for k in use}, batch_sizes={"sun": 8, "son": 8})


class _TemplateWatch(L.Callback):
    """Records the smallest template value after every training step."""

    def __init__(self) -> None:
        self.minima: list[float] = []
        self.zeros: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        t = pl_module.model.template_head.templates.detach()
        self.minima.append(float(t.min()))
        self.zeros.append(int((t == 0).sum()))


def _state(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_joint_loss_is_sun_plus_lambda_son_on_own_rows() -> None:
    torch.manual_seed(0)
    model = siam.build_model(backbone="tiny", attributes=NAMES, grid=4, border=0)
    module = SiamModule(model, stage="joint")
    sun, son = collate(samples("sun", 4, 3)), collate(samples("son", 5, 4))
    model.eval()  # deterministic BatchNorm for the comparison
    got = module.compute_losses({"sun": sun, "son": son})
    want_sun = sun_loss(model(sun.image).presence, sun.attributes)
    want_son = ((model(son.image).score - son.score) ** 2).mean()
    torch.testing.assert_close(got["sun"], want_sun)
    torch.testing.assert_close(got["son"], want_son)
    torch.testing.assert_close(got["total"], want_sun + 0.1 * want_son)
    # The SUN stage ignores SoN rows and vice versa.
    assert set(SiamModule(model, stage="sun").compute_losses({"sun": sun, "son": son})) == {"sun", "total"}
    assert set(SiamModule(model, stage="son-head").compute_losses({"sun": sun, "son": son})) == {"son", "total"}
    with pytest.raises(ValueError, match="without any usable rows"):
        SiamModule(model, stage="sun").compute_losses({"son": son})


def test_sun_stage_trains_f_only(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "sun", "sun")
    model = prepare_model(cfg, NAMES, None)
    before_g, before_f = _state(model, "template_head"), _state(model, "backbone")
    res = fit(cfg, datamodule=_dm("sun"), attributes=NAMES)
    assert res.global_step == 3 and res.model_path is not None
    trained = res.model
    assert not _changed(before_g, _state(trained, "template_head"))
    assert _changed(before_f, _state(trained, "backbone"))
    loaded = siam.load_checkpoint(res.model_path)
    assert loaded.attributes == NAMES and loaded.meta["train_config"]["stage"] == "sun"
    assert loaded.preprocessing.crop == 32


def test_son_head_freezes_f_projects_templates_and_inits_bias(tmp_path: Path) -> None:
    sun = fit(tiny_config(tmp_path / "sun", "sun"), datamodule=_dm("sun"), attributes=NAMES)
    cfg = tiny_config(tmp_path / "head", "son-head", init_from=str(sun.model_path), optim={"lr": 0.05},
                      trainer={"max_epochs": 2})
    start = prepare_model(cfg, NAMES, 4.25)
    assert float(start.template_head.bias.detach()) == 4.25  # b = mean training score
    f_before = {**_state(start, "backbone"), **_state(start, "attribute_head")}
    sun_f = {k: v for k, v in sun.model.state_dict().items() if k.startswith(("backbone", "attribute_head"))}
    assert not _changed(sun_f, f_before)  # init_from copied f
    watch = _TemplateWatch()
    res = fit(cfg, datamodule=_dm("son-head"), attributes=NAMES, son_train_mean=4.25, callbacks=[watch])
    after = res.model.state_dict()
    # f frozen, BatchNorm statistics included.
    assert not _changed(f_before, {k: after[k] for k in f_before})
    assert _changed(_state(start, "template_head"), {k: after[k] for k in _state(start, "template_head")})
    # Projected after every step: never negative, and clamping visibly happened.
    assert len(watch.minima) == res.global_step == 6
    assert min(watch.minima) >= 0.0 and max(watch.zeros) > 0


def test_joint_and_baseline_train_everything(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "joint", "joint")
    start = prepare_model(cfg, NAMES, 5.0)
    res = fit(cfg, datamodule=_dm("joint"), attributes=NAMES, son_train_mean=5.0)
    for part in ("backbone", "attribute_head", "template_head"):
        assert _changed(_state(start, part), _state(res.model, part)), part
    cfg = tiny_config(tmp_path / "base", "baseline")
    res = fit(cfg, datamodule=_dm("baseline"), attributes=NAMES, son_train_mean=5.0)
    assert isinstance(res.model, siam.Baseline)
    last = torch.load(res.last_checkpoint, weights_only=True)
    assert last["global_step"] == res.global_step == 3  # last.ckpt also written at the end
    assert last["siam_meta"]["model"]["kind"] == "baseline"
    # The resume file and the exported model hold the same weights.
    a, b = siam.load_checkpoint(res.last_checkpoint), siam.load_checkpoint(res.model_path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a(x).score, b(x).score)


def test_init_from_must_match_architecture(tmp_path: Path) -> None:
    sun = fit(tiny_config(tmp_path / "sun", "sun", trainer={"max_steps": 1}), datamodule=_dm("sun"), attributes=NAMES)
    cfg = tiny_config(tmp_path / "j", "joint", init_from=str(sun.model_path), model={"grid": 2})
    with pytest.raises(siam.errors.ConfigError, match="grid: checkpoint 4, config 2"):
        prepare_model(cfg, NAMES, 5.0)
    cfg = tiny_config(tmp_path / "b", "baseline", init_from=str(sun.model_path))
    with pytest.raises(siam.errors.ConfigError, match="holds a SIAM"):
        prepare_model(cfg, NAMES, 5.0)


def test_bf16_mixed_precision_and_channels_last(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "bf16", "joint", trainer={"precision": "bf16-mixed", "channels_last": True,
                                                           "max_steps": 2})
    res = fit(cfg, datamodule=_dm("joint"), attributes=NAMES, son_train_mean=5.0)
    assert res.global_step == 2
    conv = res.model.backbone.body[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    state = siam.load_checkpoint(res.model_path).state_dict()
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # weights stay float32 (mixed precision)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_template_smoothness_is_part_of_the_son_objective() -> None:
    torch.manual_seed(0)
    model = siam.build_model(backbone="tiny", attributes=NAMES, grid=4, border=0)
    with torch.no_grad():  # non-trivial templates: the initial effective templates are all 0
        model.template_head.templates.uniform_(0.0, 1.0)
    sun, son = collate(samples("sun", 4, 3)), collate(samples("son", 5, 4))
    model.eval()
    plain = SiamModule(model, stage="joint").compute_losses({"sun": sun, "son": son})
    from siam.training.config import OptimConfig

    smooth = SiamModule(model, stage="joint", optim=OptimConfig(template_smoothness=2.0)).compute_losses(
        {"sun": sun, "son": son}
    )
    e = model.effective_templates().detach()
    rough = ((e[:, 1:] - e[:, :-1]) ** 2).sum() + ((e[:, :, 1:] - e[:, :, :-1]) ** 2).sum()
    assert float(rough) > 0
    torch.testing.assert_close(smooth["template_roughness"], rough)
    torch.testing.assert_close(smooth["total"], plain["sun"] + 0.1 * (plain["son"] + 2.0 * rough))
    # f-only stage: the penalty never applies (g is not trained).
    sun_only = SiamModule(model, stage="sun", optim=OptimConfig(template_smoothness=2.0))
    assert "template_roughness" not in sun_only.compute_losses({"sun": sun})


class _LrWatch(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_cosine_schedule_anneals_per_step_to_zero(tmp_path: Path) -> None:
    import math

    cfg = tiny_config(tmp_path / "sun", "sun", optim={"lr": 0.01, "lr_schedule": "cosine"},
                      trainer={"max_epochs": 2})
    watch = _LrWatch()
    res = fit(cfg, datamodule=_dm("sun"), attributes=NAMES, callbacks=[watch])
    steps = res.global_step
    assert steps == 6
    want = [0.01 * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert watch.lrs == pytest.approx(want, rel=1e-6)
    # The default is the authors' step decay (constant within an epoch).
    step = tiny_config(tmp_path / "b", "sun", optim={"lr": 0.01, "lr_decay_every": 1, "lr_decay_gamma": 0.5},
                       trainer={"max_epochs": 2})
    watch2 = _LrWatch()
    fit(step, datamodule=_dm("sun"), attributes=NAMES, callbacks=[watch2])
    assert watch2.lrs == pytest.approx([0.01] * 3 + [0.005] * 3)


def test_check_targets_lets_a_trained_g_continue_on_its_own_targets_only(tmp_path) -> None:
    from siam.checkpoint import save_checkpoint
    from siam.errors import ConfigError
    from siam.models.siam import build_model
    from siam.training.engine import _check_resume_targets, check_targets

    assert check_targets(("a", "b"), ("a", "b"), stage="son-head", where="x") is False
    assert check_targets(("a",), ("b", "c"), stage="sun", where="x") is True  # g never trained
    assert check_targets(("score",), ("beauty",), stage="joint", where="x") is True  # one unnamed target
    for trained, data in ((("a", "b"), ("b", "a")), (("a", "b"), ("a",)), (("score",), ("a", "b"))):
        with pytest.raises(ConfigError, match=rf"x was trained on the targets {re.escape(repr(list(trained)))}.*"
                                              rf"this data has the targets {re.escape(repr(list(data)))}"):
            check_targets(trained, data, stage="son-head", where="x")
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model(backbone="tiny", attributes=list(NAMES), grid=4, border=0, targets=("a", "b")), path)
    _check_resume_targets(str(path), ("a", "b"))
    with pytest.raises(ConfigError, match=r"trains the targets \['a', 'b'\], but this data has the targets \['a'\]"):
        _check_resume_targets(str(path), ("a",))


def test_target_0s_g_trains_as_alone_when_a_second_target_is_added() -> None:
    """L_SoN and the template penalties are means over targets, so each target's g sees the
    one-target objective / T: Adam's steps (scale-free up to its eps) and so target 0's templates,
    mixing, w and b follow the one-target run, whatever the second target is. Measured: within
    2e-6 (|templates| ~ 0.03); with the penalties summed over targets instead, templates differ by
    0.026 (the penalties' weight against each MSE would double)."""
    from siam.data.samples import Sample
    from siam.training.config import OptimConfig

    son = samples("son", 8, 4)
    two = [Sample(image=s.image, id=s.id, source="son", scores=(s.score, 11.0 - 2.0 * s.score)) for s in son]
    optim = OptimConfig(template_smoothness=1.0, template_l1=0.0005, lr=0.05)
    params = {}
    for name, targets, batch in (("one", ("score",), collate(son)), ("two", ("a", "b"), collate(two))):
        torch.manual_seed(0)
        model = siam.build_model(backbone="tiny", attributes=NAMES, grid=4, border=0, targets=targets, bias=5.0)
        with torch.no_grad():
            model.attribute_head.conv.bias.fill_(0.5)  # an untrained f's maps are mostly 0: give g something
        module = SiamModule(model, stage="son-head", optim=optim)
        model.eval()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=optim.lr)
        for _ in range(20):
            opt.zero_grad()
            module.compute_losses({"son": batch})["total"].backward()
            opt.step()
            model.project_()
        params[name] = {k: v.detach()[0] for k, v in model.template_head.named_parameters()}
    for key, value in params["one"].items():
        torch.testing.assert_close(params["two"][key], value, atol=1e-5, rtol=0, msg=key)
    t = params["one"]["templates"]
    assert t.std() > 1e-3 and (t > 0).any()  # trained, not collapsed to one value



class _EpochStates(L.Callback):
    """The backbone's weights, BatchNorm statistics and attribute head at the start of training and
    at the end of each epoch, and whether Adam holds moments for the backbone's weights."""

    def __init__(self) -> None:
        self.states: list[dict[str, dict[str, torch.Tensor]]] = []
        self.backbone_moments: list[bool] = []

    @staticmethod
    def _snapshot(model: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
        return {
            "weights": {k: v.detach().clone() for k, v in model.backbone.named_parameters()},
            "stats": {k: v.clone() for k, v in model.backbone.named_buffers() if k.endswith("running_mean")},
            "heads": {k: v.detach().clone() for k, v in model.named_parameters() if not k.startswith("backbone.")},
        }

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.states.append(self._snapshot(pl_module.model))

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.states.append(self._snapshot(pl_module.model))
        opt = trainer.optimizers[0]
        self.backbone_moments.append(any(opt.state.get(p) for p in pl_module.model.backbone.parameters()))


def test_head_warmup_holds_the_backbone_for_its_epochs_then_trains_it(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "warm", "sun", optim={"head_warmup_epochs": 1}, trainer={"max_epochs": 2})
    watch = _EpochStates()
    fit(cfg, datamodule=_dm("sun"), attributes=NAMES, callbacks=[watch])
    start, first, second = watch.states
    # Epoch 0: the attribute layer alone; the backbone's weights held (Adam kept no moments for
    # them), but its BatchNorm statistics tracked the batches.
    assert not _changed(start["weights"], first["weights"])
    assert _changed(start["heads"], first["heads"])
    assert _changed(start["stats"], first["stats"])
    assert watch.backbone_moments == [False, True]
    # Epoch 1: the backbone trains.
    assert _changed(first["weights"], second["weights"])
    # Without the option the backbone moves in epoch 0 (the checks above are not vacuous).
    plain = _EpochStates()
    fit(tiny_config(tmp_path / "plain", "sun"), datamodule=_dm("sun"), attributes=NAMES, callbacks=[plain])
    assert _changed(plain.states[0]["weights"], plain.states[1]["weights"])
    assert plain.backbone_moments == [True]


def test_head_warmup_in_the_joint_stage_trains_both_heads_and_is_checked(tmp_path: Path) -> None:
    from siam.errors import ConfigError

    cfg = tiny_config(tmp_path / "joint", "joint", optim={"head_warmup_epochs": 5})
    watch = _EpochStates()
    fit(cfg, datamodule=_dm("joint"), attributes=NAMES, son_train_mean=5.0, callbacks=[watch])
    start, end = watch.states
    assert not _changed(start["weights"], end["weights"])  # longer than the run: a probe of the heads
    heads = {k for k in start["heads"] if _changed({k: start["heads"][k]}, {k: end["heads"][k]})}
    assert any(k.startswith("attribute_head.") for k in heads) and any(k.startswith("template_head.") for k in heads)
    with pytest.raises(ConfigError, match=r"optim.head_warmup_epochs: got -1; allowed: an integer >= 0"):
        tiny_config(tmp_path / "bad", "sun", optim={"head_warmup_epochs": -1})
