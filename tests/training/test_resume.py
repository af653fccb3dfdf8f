"""kill -9 in the middle of a real `siam train` run, then --resume continues from the last step and
ends where an uninterrupted run of the same seed ends: same weights, Adam moments and LR schedule.

The run is set up so that its batches do not depend on the random state: the 30 training photos
form one batch per epoch (shuffling only reorders rows within it) and augmentation is off (no
flip, no rotation, crop = resize). What a resume must restore (weights, optimiser moments, the
LR scheduler's position, the step counter) is then all that can make the two runs differ. The LR
decays every epoch (= every step), so an LR schedule restarted from 0 is visible.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import siam

from .helpers import write_folder

N_SON = 40  # -> 30 training photos: one batch of BATCH per epoch
BATCH = 32
LR, GAMMA = 3e-3, 0.8
ARGS = ["--stage", "baseline", "--set", "model.backbone=tiny", "--set", "preprocessing.resize=32",
        "--set", "preprocessing.crop=32", "--set", "preprocessing.hflip=false",
        "--set", "preprocessing.max_rotation=0", "--set", "trainer.progress_bar=false",
        "--set", "trainer.num_threads=1", "--set", "trainer.checkpoint_every_n_steps=4",
        "--set", f"data.batch_size={BATCH}", "--set", "data.num_workers=0",
        "--set", f"optim.lr={LR}", "--set", "optim.lr_schedule=step", "--set", "optim.lr_decay_every=1",
        "--set", f"optim.lr_decay_gamma={GAMMA}",
        "--set", "trainer.val_every_n_epochs=0", "--accelerator", "cpu", "--devices", "1"]
# Float32 on one CPU thread: both runs do the same operations on the same rows; only the order of
# rows within the batch (reshuffled after the restart) changes sums in the last bits. Measured:
# max |difference| 1.2e-7 in the weights, 3e-8 in Adam's first moments, while the 3 steps after
# the restart move some weight by 0.5. Resumes broken on purpose (fresh weights, cleared Adam
# state, or the LR schedule back at epoch 0, each with the step counter restored) fail here.
ATOL, RTOL = 2e-6, 1e-5


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "siam.cli", "train", "--data", str(data), "--out", str(out), *ARGS, *extra]


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _step(ckpt: Path) -> int:
    return int(_ckpt(ckpt)["global_step"])


def _optimizer_state(ckpt: Path) -> tuple[list[dict[str, torch.Tensor]], float, dict[str, Any]]:
    """Adam's per-parameter state, its current LR and the LR scheduler's state."""
    c = _ckpt(ckpt)
    (opt,) = c["optimizer_states"]
    (sched,) = c["lr_schedulers"]
    states = [opt["state"][k] for k in sorted(opt["state"])]
    return states, float(opt["param_groups"][0]["lr"]), sched


@pytest.mark.timeout(300)
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=12, n_son=N_SON)
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
    killed = _ckpt(last)

    # Starting again without --resume refuses to overwrite the run.
    from siam.cli import main

    assert main(["train", "--data", str(data), "--out", str(out), *ARGS]) == 2

    total = saved + 3
    done = subprocess.run(_cmd(data, out, "--max-steps", str(total), "--resume"), env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {last} at global step {saved}" in done.stdout
    assert _step(last) == total  # continued, did not restart from 0
    model = siam.load_checkpoint(out / "model.safetensors")
    assert model.meta["metrics"]["global_step"] == total

    # The same seed without interruption, for exactly as many steps.
    ref = tmp_path / "reference"
    assert main(["train", "--data", str(data), "--out", str(ref), *ARGS, "--max-steps", str(total)]) == 0
    assert _step(ref / "checkpoints" / "last.ckpt") == total

    resumed_w, ref_w = load_file(out / "model.safetensors"), load_file(ref / "model.safetensors")
    assert resumed_w.keys() == ref_w.keys()
    for name, w in ref_w.items():
        torch.testing.assert_close(resumed_w[name], w, atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"{n}: {m}")
    # the last 3 steps moved the weights far more than the tolerance, so the comparison has teeth
    at_kill = killed["state_dict"]
    moved = max(float((w - at_kill[f"model.{n}"]).abs().max()) for n, w in ref_w.items() if w.is_floating_point())
    assert moved > 100 * ATOL

    resumed_opt, resumed_lr, resumed_sched = _optimizer_state(last)
    ref_opt, ref_lr, ref_sched = _optimizer_state(ref / "checkpoints" / "last.ckpt")
    assert len(resumed_opt) == len(ref_opt) > 0
    for a, b in zip(resumed_opt, ref_opt):
        assert int(a["step"]) == int(b["step"]) == total  # Adam's own step count (bias correction)
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-9, rtol=RTOL)
    assert resumed_sched["last_epoch"] == ref_sched["last_epoch"]
    assert resumed_lr == pytest.approx(ref_lr, rel=1e-12)
    assert ref_lr == pytest.approx(LR * GAMMA ** ref_sched["last_epoch"], rel=1e-9)
    assert ref_sched["last_epoch"] >= total - 1  # the schedule decayed once per epoch (= step)
