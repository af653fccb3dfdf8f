"""Mask supervision from a data folder: config keys, masks in the SUN batches, a short run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from siam.data.datamodule import datamodule_from_config
from siam.errors import ConfigError
from siam.training.engine import fit

from .helpers import NAMES, SIZE, tiny_config, write_folder


def _world(tmp_path: Path, n_sun: int = 20) -> Path:
    """write_folder + planted-style truth/masks/sun/<row>.npz (attribute k covers column block k)."""
    data = write_folder(tmp_path / "data", n_sun=n_sun, n_son=12)
    folder = data / "truth" / "masks" / "sun"
    folder.mkdir(parents=True)
    (data / "truth" / "meta.json").write_text(json.dumps({"attributes": list(NAMES)}))
    for row in range(n_sun):
        m = np.zeros((len(NAMES), SIZE, SIZE), dtype=bool)
        for k in range(len(NAMES)):
            m[k, :, k * 8 : k * 8 + 8] = True
        np.savez(folder / f"{row}.npz", masks=m)
    scipy.io.savemat(data / "sun" / "trainval_idx.mat", {"sets": np.zeros((n_sun, 1))})  # all train
    return data


def test_mask_config_keys_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim.mask_weight: got -1.0"):
        tiny_config(tmp_path, "sun", optim={"mask_weight": -1.0})
    with pytest.raises(ConfigError, match=r"data.mask_fraction: got 1.5"):
        tiny_config(tmp_path, "sun", data={"mask_fraction": 1.5})
    cfg = tiny_config(tmp_path, "sun")
    assert cfg.optim.mask_weight == 0.0 and cfg.data.masks is None and cfg.data.mask_fraction == 1.0


def test_sun_batches_carry_the_planted_masks_on_the_model_grid(tmp_path: Path) -> None:
    data = _world(tmp_path)
    cfg = tiny_config(tmp_path / "run", "sun", data={"root": str(data), "batch_size": 20},
                      optim={"mask_weight": 1.0}, preprocessing={"hflip": False})
    dm, names, _ = datamodule_from_config(cfg)
    batch = next(iter(dm.train_dataloader()))[0]["sun"]
    assert names == NAMES and batch.masks.shape == (20, 3, 4, 4) and batch.masks_valid.all()
    # no rotation or flip, resize = crop: attribute k covers exactly the model's column of cells k
    for k in range(3):
        expected = np.zeros((4, 4))
        expected[:, k] = 1.0
        assert np.allclose(batch.masks[:, k].numpy(), expected)
    # 10 % of the images keep their masks (seeded by data.split_seed); mask_weight 0: no masks at all
    tenth = tiny_config(tmp_path / "run", "sun", data={"root": str(data), "batch_size": 20, "mask_fraction": 0.1},
                        optim={"mask_weight": 1.0})
    batch = next(iter(datamodule_from_config(tenth)[0].train_dataloader()))[0]["sun"]
    assert int(batch.masks_valid.all(1).sum()) == 2
    plain = tiny_config(tmp_path / "run", "sun", data={"root": str(data), "batch_size": 20})
    assert next(iter(datamodule_from_config(plain)[0].train_dataloader()))[0]["sun"].masks is None


def test_mask_weight_without_masks_is_a_clear_error(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=8, n_son=8)
    cfg = tiny_config(tmp_path / "run", "sun", data={"root": str(data)}, optim={"mask_weight": 1.0})
    with pytest.raises(ConfigError, match=r"needs masks: set data.masks"):
        datamodule_from_config(cfg)


@pytest.mark.parametrize("cache", [False, True])
def test_a_short_run_trains_with_the_mask_term(tmp_path: Path, cache: bool) -> None:
    data = _world(tmp_path, n_sun=16)
    cfg = tiny_config(tmp_path / f"run{cache}", "sun", data={"root": str(data), "batch_size": 8, "cache": cache},
                      optim={"mask_weight": 1.0}, preprocessing={"max_rotation": 10.0}, trainer={"max_steps": 2})
    res = fit(cfg)
    assert res.global_step == 2 and res.model_path.is_file()
    logged = list((tmp_path / f"run{cache}").rglob("metrics.csv"))
    assert logged and "train/mask_loss" in logged[0].read_text().splitlines()[0]
