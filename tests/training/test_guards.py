"""The non-finite guard, checkpoint contents and CLI errors."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch

import siam
from siam.cli import main
from siam.data.datamodule import SiamDataModule
from siam.training.engine import fit
from siam.training.module import NonFiniteError, SiamModule

from .helpers import NAMES, samples, tiny_config


class _PoisonAt(L.Callback):
    """Makes one SoN target NaN at a given global step (a corrupt label reaching the loss)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            batch["son"].score[0] = math.nan


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_loss_names_the_step_and_saves_nothing_bad(tmp_path: Path) -> None:
    dm = SiamDataModule(train={"son": samples("son", 48, 2)}, batch_sizes={"son": 8})
    cfg = tiny_config(tmp_path / "run", "baseline", trainer={"checkpoint_every_n_steps": 2})
    with pytest.raises(NonFiniteError, match=r"non-finite loss at global step 3 \(epoch 0, batch 3\)"):
        fit(cfg, datamodule=dm, attributes=NAMES, son_train_mean=5.0, callbacks=[_PoisonAt(3)])
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 and _finite(last["state_dict"])  # the last good state, kept
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_checkpoint_with_nan_weights_is_refused() -> None:
    model = siam.build_model(backbone="tiny", attributes=NAMES, grid=4, border=0)
    module = SiamModule(model, stage="joint")
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    ckpt = {"state_dict": state}
    module.on_save_checkpoint(ckpt)
    assert ckpt["siam_meta"]["attributes"] == list(NAMES) and ckpt["siam_meta"]["stage"] == "joint"
    state["model.template_head.templates"][0, 0, 0, 0] = math.inf
    with pytest.raises(NonFiniteError, match="refusing to save"):
        module.on_save_checkpoint({"state_dict": state})


def test_nan_weights_after_a_step_stop_training(tmp_path: Path) -> None:
    class _Explode(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
            if trainer.global_step == 1:
                for p in pl_module.parameters():
                    if p.grad is not None:
                        p.grad.fill_(math.nan)

    dm = SiamDataModule(train={"son": samples("son", 32, 2)}, batch_sizes={"son": 8})
    cfg = tiny_config(tmp_path / "run", "baseline")
    with pytest.raises(NonFiniteError, match="non-finite weights after the optimiser step at global step 1"):
        fit(cfg, datamodule=dm, attributes=NAMES, son_train_mean=5.0, callbacks=[_Explode()])
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_train_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown config key(s) ['optim.learning_rate']" in err and "Traceback" not in err
    assert main(["train", "--stage", "sun", "--out", str(tmp_path / "o"), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "--stage", "sun", "--out", str(tmp_path / "o2")]) == 2
    assert "no data given" in capsys.readouterr().err
    assert main(["train", "--stage", "sun", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--stage", "finetune"])
    assert "invalid choice: 'finetune'" in capsys.readouterr().err


def test_print_config_resolves_flags_over_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    root = Path(__file__).resolve().parents[2]
    code = main(["train", "--config", str(root / "configs" / "quickstart.yaml"), "--stage", "son-head",
                 "--devices", "2", "--strategy", "ddp", "--num-nodes", "2", "--precision", "bf16-mixed",
                 "--lr", "0.5", "--set", "optim.son_weight=0.3", "--print-config"])
    assert code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["stage"] == "son-head" and cfg["optim"]["lr"] == 0.5 and cfg["optim"]["son_weight"] == 0.3
    t = cfg["trainer"]
    assert (t["devices"], t["strategy"], t["num_nodes"], t["precision"]) == (2, "ddp", 2, "bf16-mixed")
