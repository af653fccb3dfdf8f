"""kill -9 in the middle of a real `siam train` run, then --resume continues from the last step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import siam

from .helpers import write_folder

ARGS = ["--stage", "baseline", "--set", "model.backbone=tiny", "--set", "preprocessing.resize=32",
        "--set", "preprocessing.crop=32", "--set", "trainer.progress_bar=false", "--set", "trainer.num_threads=1",
        "--set", "trainer.checkpoint_every_n_steps=4", "--set", "data.batch_size=4", "--set", "data.num_workers=0",
        "--set", "trainer.val_every_n_epochs=0", "--accelerator", "cpu", "--devices", "1"]


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "siam.cli", "train", "--data", str(data), "--out", str(out), *ARGS, *extra]


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, weights_only=True)["global_step"])


@pytest.mark.timeout(300)
def test_sigkill_then_resume_continues_from_last_saved_step(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=12, n_son=40)
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cmd(data, out, "--max-steps", "100000"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file() and _step(last) >= 8:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:] if proc.stdout else ""
        proc.send_signal(signal.SIGKILL)  # kill -9: no clean-up code runs
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = _step(last)  # the file is complete (atomic writes) and loadable weights-only
    assert saved >= 8 and saved % 4 == 0
    assert not (out / "model.safetensors").exists()

    # Starting again without --resume refuses to overwrite the run.
    from siam.cli import main

    assert main(["train", "--data", str(data), "--out", str(out), *ARGS]) == 2

    done = subprocess.run(_cmd(data, out, "--max-steps", str(saved + 3), "--resume"), env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {last} at global step {saved}" in done.stdout
    assert _step(last) == saved + 3  # continued, did not restart from 0
    model = siam.load_checkpoint(out / "model.safetensors")
    assert model.meta["metrics"]["global_step"] == saved + 3
