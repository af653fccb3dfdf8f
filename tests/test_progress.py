"""Progress output: a live bar on a terminal, plain lines (never a carriage return) in a log."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from siam import progress as prog
from siam.progress import LineProgress, interactive, progress


class _Stream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("out_tty", "err_tty", "expected"), [(True, True, True), (True, False, False),
                                                               (False, True, False), (False, False, False)])
def test_interactive_needs_both_streams_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, out_tty: bool, err_tty: bool, expected: bool
) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(out_tty))
    monkeypatch.setattr(sys, "stderr", _Stream(err_tty))
    assert interactive() is expected


def test_progress_is_a_bar_on_a_terminal_lines_in_a_log_nothing_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm import tqdm

    monkeypatch.setattr(sys, "stdout", _Stream(True))
    monkeypatch.setattr(sys, "stderr", _Stream(True))
    bar = progress(total=3, desc="x", unit="img")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr(sys, "stderr", _Stream(False))  # e.g. 2> run.log
    assert isinstance(progress(total=3, desc="x", unit="img"), LineProgress)
    assert isinstance(progress(total=3, desc="x", unit="img", enabled=None), LineProgress)
    off = progress(total=3, desc="x", unit="img", enabled=False)
    off.update(3)
    off.close()
    assert sys.stderr.getvalue() == "" and sys.stdout.getvalue() == ""


def test_line_progress_prints_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    bar = LineProgress(total=10, desc="siam synth", unit="img", interval_s=30.0, file=log)
    for _ in range(4):  # 10 s apart: a line once 30 s have passed since the last one
        clock[0] += 10.0
        bar.update(2)
    bar.update(2)
    bar.close()
    bar.close()  # idempotent
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines == [
        "siam synth: 6/10 img (60%), 0:30 elapsed, 0.2 img/s, ~0:20 left",
        "siam synth: 10/10 img (100%), 0:40 elapsed, 0.25 img/s",
    ]


def test_line_progress_resumed_counts_from_initial(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    with LineProgress(total=8, desc="siam score", unit="img", initial=6, file=log) as bar:
        clock[0] += 4.0
        bar.update(2)
    assert log.getvalue() == "siam score: 8/8 img (100%), 0:04 elapsed, 0.5 img/s\n"  # rate of this run only
    quiet = io.StringIO()
    LineProgress(total=8, desc="x", initial=8, file=quiet).close()  # nothing done: nothing printed
    assert quiet.getvalue() == ""


def test_synth_progress_in_a_log_is_plain_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from siam.synth import SynthConfig, generate

    cfg = SynthConfig(n_sun=10, n_son=10, size=(32, 32), grid=4, n_son_attributes=2)
    generate(tmp_path / "d", seed=0, config=cfg, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "siam synth: 20/20 img (100%)" in err
