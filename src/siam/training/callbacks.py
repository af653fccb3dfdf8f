"""Engine plug-ins: atomic, weights-only checkpoint I/O, a resume notice and plain progress lines.

Lightning's own ``_atomic_save`` writes through an fsspec transaction whose temporary file lives
in the system temp dir; when that is another file system, the final ``shutil.move`` is a copy
that a ``kill -9`` can interrupt half-way. :class:`AtomicCheckpointIO` writes the temporary file
next to the target, fsyncs it and ``os.replace``-s it, so ``last.ckpt`` is always either the old
or the new complete file. Loading is always ``torch.load(weights_only=True)``: a resume file can
hold tensors and plain containers only, never code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from siam.errors import CheckpointError
from siam.progress import LINE_INTERVAL_S

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "ResumeNotice", "EpochLines"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save with write-to-temp + fsync + ``os.replace``; load with ``weights_only=True`` only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(f"{path}: resume files are only read with weights_only=True (no pickled code)")
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"resume checkpoint not found: {str(p)!r}")
        try:
            return torch.load(p, map_location=map_location or "cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(f"{p}: not a weights-only Lightning checkpoint ({exc})") from exc


class ResumeNotice(L.Callback):
    """Print, once, the global step a resumed run starts from (rank 0)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.path and trainer.is_global_zero:
            print(f"siam train: resumed from {self.path} at global step {trainer.global_step} "
                  f"(epoch {trainer.current_epoch})", flush=True)


class LastCheckpoint(ModelCheckpoint):
    """Keep one resume file, ``dirpath/last.ckpt``: written every ``every_n_train_steps`` steps and
    when training ends (Lightning's own end-of-training save is skipped once any save happened).
    Never written on an exception, so a NaN-stopped run keeps its last good file."""

    def __init__(self, dirpath: str | os.PathLike[str], *, every_n_train_steps: int) -> None:
        super().__init__(dirpath=dirpath, every_n_train_steps=every_n_train_steps, save_top_k=0,
                         save_last=True, save_on_exception=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class EpochLines(L.Callback):
    """Training progress without a bar: one line per epoch, plus one at least every ``interval_s``
    seconds inside a long epoch (rank 0, to stdout). Used instead of the bar when not
    :func:`siam.progress.interactive`.

    ``siam train: epoch 3/10 done, step 120, 4.1 s, train/loss 0.4132`` (the logged metrics
    whose name contains "loss").
    """

    def __init__(self, *, interval_s: float = LINE_INTERVAL_S, prefix: str = "siam train") -> None:
        self.interval_s = interval_s
        self.prefix = prefix
        self._epoch_start = self._last = 0.0

    def _metrics(self, trainer: L.Trainer) -> str:
        parts = []
        for name, value in sorted(trainer.callback_metrics.items()):
            if "loss" in name:
                try:
                    parts.append(f"{name} {float(value):.4g}")
                except (TypeError, ValueError):
                    continue
        return (", " + ", ".join(parts)) if parts else ""

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(f"{self.prefix}: {text}", flush=True)
        self._last = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if time.monotonic() - self._last >= self.interval_s:
            total = trainer.num_training_batches
            of = f"/{total}" if isinstance(total, int) else ""
            self._print(trainer, f"epoch {trainer.current_epoch + 1}{self._of_epochs(trainer)}, batch "
                        f"{batch_idx + 1}{of}, step {trainer.global_step}{self._metrics(trainer)}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        took = time.monotonic() - self._epoch_start
        self._print(trainer, f"epoch {trainer.current_epoch + 1}{self._of_epochs(trainer)} done, step "
                    f"{trainer.global_step}, {took:.1f} s{self._metrics(trainer)}")

    @staticmethod
    def _of_epochs(trainer: L.Trainer) -> str:
        return f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
