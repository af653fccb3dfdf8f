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


def test_masks_of_a_synth_world_equal_its_planted_pooled_masks(tmp_path: Path) -> None:
    from siam.synth import SynthConfig, generate, pool_to_grid
    from siam.evaluation.planted import load_truth
    from siam.training.config import config_from_dict

    world = tmp_path / "world"
    generate(world, config=SynthConfig(n_sun=20, n_son=10))
    cfg = config_from_dict({
        "stage": "joint", "out": str(tmp_path / "run"), "model": {"backbone": "tiny", "grid": 8},
        "preprocessing": {"resize": 128, "crop": 128, "max_rotation": 0.0, "hflip": False},
        "data": {"root": str(world), "batch_size": 8, "num_workers": 0}, "optim": {"mask_weight": 1.0},
        "trainer": {"val_every_n_epochs": 0}})
    batch = next(iter(datamodule_from_config(cfg)[0].train_dataloader()))[0]["sun"]
    truth = load_truth(world / "truth")
    planted = np.stack([pool_to_grid(truth.masks("sun", i), 8) for i in batch.ids])
    assert batch.masks.shape == planted.shape and np.allclose(batch.masks.numpy(), planted, atol=1e-6)


def test_cli_masks_from_ade20k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from siam.cli import main

    seg = np.zeros((4, 4, 3), dtype=np.uint8)
    seg[:2, :, 1] = 5  # class 5 (G = 5, R = 0)
    (tmp_path / "ade").mkdir()
    Image.fromarray(seg).save(tmp_path / "ade" / "x_seg.png")
    (tmp_path / "names.txt").write_text("wall\nsky\nfloor\nceiling\ntree\n")
    assert main(["data", "masks-from-ade20k", "--ade", str(tmp_path / "ade"), "--out", str(tmp_path / "out"),
                 "--object-names", str(tmp_path / "names.txt")]) == 0
    assert "wrote 1 masks" in capsys.readouterr().out
    rows = (tmp_path / "out" / "mask_classes.csv").read_text().splitlines()
    assert rows[0] == "class_index,class_name,attribute" and "5,tree,trees" in rows
    assert main(["data", "masks-from-ade20k", "--ade", str(tmp_path / "none"), "--out", str(tmp_path / "o2")]) == 2
    assert "no ADE20K *_seg.png files found" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "weight", "fraction"), [
    ("truth_quick_masks.yaml", 0.1, 1.0), ("truth_quick_masks10.yaml", 0.1, 0.1),
    ("truth_quick_masks_w003.yaml", 0.03, 1.0), ("truth_quick_masks_w03.yaml", 0.3, 1.0),
])
def test_truth_budgets_with_masks_set_the_mask_keys(tmp_path: Path, name: str, weight: float, fraction: float) -> None:
    from siam.quickstart import RECIPE, stage_configs
    from siam.truth.config import read_budget

    root = Path(__file__).resolve().parents[2]
    _, budget = read_budget(root / "configs" / name)
    _, short = read_budget(root / "configs" / "truth_short.yaml")  # the epochs the option files keep
    assert budget.seeds == short.seeds and set(short.overrides) < set(budget.overrides)
    raw, overrides = budget.recipe(RECIPE)
    cfgs = stage_configs(tmp_path, tmp_path / "world", raw, list(overrides))
    assert all(c.optim.mask_weight == weight and c.data.mask_fraction == fraction for c in cfgs.values())


def test_the_paper_recipe_has_no_mask_supervision() -> None:
    from siam.data.datamodule import uses_masks
    from siam.training.config import STAGES, load_config

    root = Path(__file__).resolve().parents[2]
    for stage in STAGES:
        cfg = load_config(root / "configs" / "paper.yaml", stage=stage)
        assert cfg.optim.mask_weight == 0.0 and cfg.data.masks is None and not uses_masks(cfg)


@pytest.mark.parametrize("layout", ["synth", "csv"])
def test_class_index_png_masks_reach_the_batches(tmp_path: Path, layout: str) -> None:
    from PIL import Image

    from siam.data.to_csv import convert_to_csv

    data = write_folder(tmp_path / "data", n_sun=12, n_son=12)
    scipy.io.savemat(data / "sun" / "trainval_idx.mat", {"sets": np.zeros((12, 1))})
    root = data
    if layout == "csv":  # the CSV format, matched to the masks by image stem too
        convert_to_csv(data, tmp_path / "csv")
        root = tmp_path / "csv"
    masks = tmp_path / "seg"
    (masks / "masks").mkdir(parents=True)
    (masks / "mask_classes.csv").write_text("class_index,class_name,attribute\n0,ground,\n1,bush,green\n2,shrub,green\n")
    index = np.zeros((SIZE, SIZE), dtype=np.uint8)
    index[: SIZE // 2, :] = 1  # top half: bush, bottom-left quarter: shrub -> both 'green'
    index[SIZE // 2 :, : SIZE // 2] = 2
    for i in range(12):
        Image.fromarray(index).save(masks / "masks" / f"{i:04d}.png")
    cfg = tiny_config(tmp_path / f"run_{layout}", "sun",
                      data={"root": str(root), "batch_size": 8, "masks": str(masks)},
                      optim={"mask_weight": 1.0}, preprocessing={"hflip": False})
    batch = next(iter(datamodule_from_config(cfg)[0].train_dataloader()))[0]["sun"]
    assert batch.masks_valid.tolist() == [[False, True, False]] * 8  # only 'green' is annotated
    expected = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=float)
    assert np.allclose(batch.masks[:, 1].numpy(), expected) and batch.masks[:, 0].abs().sum() == 0
