"""DDP smoke test: 2 CPU processes (gloo), each rank trains on a disjoint half of the data."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

import siam
from siam.data.datamodule import SiamDataModule
from siam.training.engine import fit

from .helpers import NAMES, samples, tiny_config


class RecordIds(L.Callback):
    """Each rank appends the SoN ids of its training batches to ``dir/rank<r>.txt``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        with open(Path(self.directory) / f"rank{trainer.global_rank}.txt", "a") as fh:
            fh.write("\n".join(batch["son"].ids) + "\n")
        with open(Path(self.directory) / f"world{trainer.global_rank}.txt", "w") as fh:
            fh.write(f"{trainer.world_size} {torch.distributed.get_backend()}\n")


def test_two_process_gloo_ranks_see_disjoint_samples(tmp_path: Path) -> None:
    data = samples("son", 32, 5)
    dm = SiamDataModule(train={"son": data}, batch_sizes={"son": 8})
    cfg = tiny_config(tmp_path / "run", "baseline", trainer={
        "devices": 2, "strategy": "ddp_spawn", "accelerator": "cpu", "max_epochs": 1})
    ids_dir = tmp_path / "ids"
    ids_dir.mkdir()
    res = fit(cfg, datamodule=dm, attributes=NAMES, son_train_mean=5.0, callbacks=[RecordIds(str(ids_dir))])
    seen = [set((ids_dir / f"rank{r}.txt").read_text().split()) for r in (0, 1)]
    assert all((ids_dir / f"world{r}.txt").read_text().split() == ["2", "gloo"] for r in (0, 1))
    assert seen[0] and seen[1] and not (seen[0] & seen[1])  # disjoint
    assert seen[0] | seen[1] == {s.id for s in data}  # together: every sample once
    model = siam.load_checkpoint(res.model_path)  # rank 0 exported the trained model
    assert isinstance(model, siam.Baseline)
