"""Training progress: a live bar on a terminal, one plain line per epoch in a log (no ``\\r``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from siam.data.datamodule import SiamDataModule
from siam.training import engine
from siam.training.callbacks import EpochLines
from siam.training.engine import fit

from .helpers import NAMES, samples, tiny_config

EPOCHS = 3


def _dm() -> SiamDataModule:
    return SiamDataModule(train={"son": samples("son", 16, 2)}, batch_sizes={"son": 8})  # 2 steps per epoch


def test_training_log_has_one_plain_line_per_epoch_and_no_carriage_return(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # pytest's captured stdout/stderr are not terminals: like CI, nohup or `> run.log`
    cfg = tiny_config(tmp_path / "run", "baseline", trainer={"progress_bar": True, "max_epochs": EPOCHS})
    fit(cfg, datamodule=_dm(), attributes=NAMES, son_train_mean=5.0)
    captured = capsys.readouterr()
    log = captured.out + captured.err
    assert "\r" not in log
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("siam train: epoch")]
    assert len(lines) == EPOCHS
    for e, line in enumerate(lines, start=1):
        assert line.startswith(f"siam train: epoch {e}/{EPOCHS} done, step {2 * e}, "), line
        assert ", train/loss " in line, line


def test_long_epochs_also_get_lines_within_the_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny_config(tmp_path / "run", "baseline", trainer={"progress_bar": False, "max_epochs": 1})
    fit(cfg, datamodule=_dm(), attributes=NAMES, son_train_mean=5.0, callbacks=[EpochLines(interval_s=0.0)])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("siam train: epoch")]
    assert [ln.split(", train/")[0] for ln in lines] == [
        "siam train: epoch 1/1, batch 1/2, step 1",
        "siam train: epoch 1/1, batch 2/2, step 2",
        lines[2].split(", train/")[0],
    ]
    assert lines[2].startswith("siam train: epoch 1/1 done, step 2, ")


@pytest.mark.parametrize(("tty", "bar", "lines"), [(True, True, False), (False, False, True)])
def test_bar_on_a_terminal_lines_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           tty: bool, bar: bool, lines: bool) -> None:
    monkeypatch.setattr(engine, "interactive", lambda: tty)
    cfg = tiny_config(tmp_path / "run", "baseline", trainer={"progress_bar": True})
    trainer = engine._trainer(cfg, tmp_path / "run", [])
    kinds = {type(c) for c in trainer.callbacks}
    assert (TQDMProgressBar in kinds) is bar and (EpochLines in kinds) is lines
