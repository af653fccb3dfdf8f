"""Engine plug-ins: atomic, weights-only checkpoint I/O and a resume notice.

Lightning's own ``_atomic_save`` writes through an fsspec transaction whose temporary file lives
in the system temp dir; when that is another file system, the final ``shutil.move`` is a copy
that a ``kill -9`` can interrupt half-way. :class:`AtomicCheckpointIO` writes the temporary file
next to the target, fsyncs it and ``os.replace``-s it, so ``last.ckpt`` is always either the old
or the new complete file. Loading is always ``torch.load(weights_only=True)``: a resume file can
hold tensors and plain containers only, never code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from siam.errors import CheckpointError

__all__ = ["AtomicCheckpointIO", "LastCheckpoint", "ResumeNotice"]


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
