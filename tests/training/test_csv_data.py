"""``siam train`` and ``siam evaluate`` on a CSV folder converted from the 'siam synth' layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import siam
from siam.checkpoint import read_meta
from siam.cli import main
from siam.data.datamodule import datamodule_from_config
from siam.data.to_csv import convert_to_csv
from siam.errors import DatasetError
from siam.training.engine import fit

from .helpers import NAMES, tiny_config, write_folder

# The metrics both layouts report (planted truth and the SoN attribute set are not in the CSV format).
SHARED_METRICS = ("son_rmse", "son_tau", "son_n", "sun_map")
# Evaluation is deterministic and both layouts decode the same files in the same order and batches,
# so the metrics agree to float precision; 1e-6 leaves room for nothing else.
TOL = 1e-6


def _recipe(tmp_path: Path) -> Path:
    cfg = tiny_config(tmp_path / "unused", "sun", data={"batch_size": 4}).to_dict()  # one epoch
    for key in ("stage", "out"):
        cfg.pop(key)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _drop_split_column(csv_dir: Path) -> None:
    for file in ("attributes.csv", "targets.csv"):
        rows = list(csv.reader(open(csv_dir / file)))
        with open(csv_dir / file, "w", newline="") as fh:
            csv.writer(fh).writerows([r[:1] + r[2:] for r in rows])


def _report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())["models"]["m"]


def test_train_and_evaluate_on_the_csv_copy_match_the_original_layout(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=40, n_son=40)
    csv_dir = tmp_path / "csv"
    convert_to_csv(data, csv_dir)
    recipe = _recipe(tmp_path)
    sun_run, head_run = tmp_path / "sun", tmp_path / "head"
    assert main(["train", "--config", str(recipe), "--stage", "sun", "--data", str(csv_dir), "--out", str(sun_run)]) == 0
    model = sun_run / "model.safetensors"
    assert main(["train", "--config", str(recipe), "--stage", "son-head", "--data", str(csv_dir), "--out",
                 str(head_run), "--init-from", str(model), "--max-steps", "8", "--lr", "0.05"]) == 0
    ckpt = head_run / "model.safetensors"
    assert read_meta(ckpt)["trained_on"]["kind"] == "csv"
    assert not (head_run / "splits.csv").exists()  # the converted folder has a split column: nothing drawn
    reports = {}
    for name, folder in (("orig", data), ("csv", csv_dir)):
        out = tmp_path / f"eval_{name}"
        assert main(["evaluate", "--model", f"m={ckpt}", "--data", str(folder), "--out", str(out)]) == 0
        reports[name] = _report(out)
    orig, conv = reports["orig"], reports["csv"]
    assert orig["son_n"] == conv["son_n"] == 6 and all(orig[k] is not None for k in SHARED_METRICS)
    for key in SHARED_METRICS:
        assert conv[key] == pytest.approx(orig[key], abs=TOL), key


def test_csv_folder_without_splits_draws_writes_and_reuses_out_splits(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=20, n_son=20)
    csv_dir = tmp_path / "csv"
    convert_to_csv(data, csv_dir)
    _drop_split_column(csv_dir)
    cfg = tiny_config(tmp_path / "run", "joint", data={"root": str(csv_dir)}, trainer={"val_every_n_epochs": 1})
    dm, names, son_mean = datamodule_from_config(cfg)
    assert names == NAMES and son_mean is not None
    written = dict(list(csv.reader(open(tmp_path / "run" / "splits.csv")))[1:])
    assert len(written) == 40 and set(written.values()) == {"train", "val", "test"}
    train_ids = set(dm.train_sets["sun"].dataset.ids)  # SkipBadImages(CsvDataset)
    assert train_ids == {p for p, s in written.items() if s == "train" and p.startswith("images/sun/")}
    # A second stage in the same folder reuses the file (edit it: the edit is what is used).
    moved = next(p for p, s in written.items() if s == "train" and p.startswith("images/son/"))
    written[moved] = "val"
    with open(tmp_path / "run" / "splits.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "split"], *written.items()])
    dm, _, _ = datamodule_from_config(cfg)
    assert moved in dm.val_sets["son"].ids


def test_neither_layout_and_several_targets_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "photos").mkdir()
    cfg = tiny_config(tmp_path / "run", "sun", data={"root": str(tmp_path / "photos")})
    with pytest.raises(DatasetError, match="neither layout"):
        datamodule_from_config(cfg)
    data = write_folder(tmp_path / "data", n_sun=4, n_son=4)
    convert_to_csv(data, tmp_path / "two", derived_target="reversed")
    recipe = _recipe(tmp_path)
    assert main(["train", "--config", str(recipe), "--stage", "son-head", "--data", str(tmp_path / "two"),
                 "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "targets.csv, line 1" in err and "['scenicness', 'scenicness_reversed']" in err and "not supported yet" in err
    m = tmp_path / "m.safetensors"
    siam.save_checkpoint(siam.build_model(backbone="tiny", attributes=list(NAMES), grid=4, border=0), m)
    assert main(["evaluate", "--model", str(m), "--data", str(tmp_path / "photos")]) == 2
    assert "neither layout" in capsys.readouterr().err


def test_training_on_the_csv_copy_gives_the_same_weights(tmp_path: Path) -> None:
    """Same samples in the same order: a seeded run on either layout is the same run, weight for weight."""
    data = write_folder(tmp_path / "data", n_sun=24, n_son=24)
    convert_to_csv(data, tmp_path / "csv")
    convert_to_csv(write_folder(tmp_path / "other_data", n_sun=24, n_son=24, seed=5), tmp_path / "other")
    weights = {}
    for name in ("data", "csv", "other"):
        cfg = tiny_config(tmp_path / f"run_{name}", "joint", data={"root": str(tmp_path / name), "batch_size": 4},
                          trainer={"max_steps": 3})
        res = fit(cfg)
        assert res.global_step == 3
        weights[name] = res.model.state_dict()
    assert weights["data"].keys() == weights["csv"].keys()
    for key, value in weights["data"].items():
        assert torch.equal(value, weights["csv"][key]), key
    # ... and the data do matter: other images give other weights.
    assert any(not torch.equal(v, weights["other"][k]) for k, v in weights["data"].items())


def test_evaluate_draws_the_split_the_model_was_trained_with(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=20, n_son=20)
    csv_dir = tmp_path / "csv"
    convert_to_csv(data, csv_dir)
    _drop_split_column(csv_dir)
    cfg = tiny_config(tmp_path / "run", "sun", data={"root": str(csv_dir), "split_seed": 3})
    datamodule_from_config(cfg)  # what siam train does first: draws and writes run/splits.csv
    m = tmp_path / "m.safetensors"
    siam.save_checkpoint(siam.build_model(backbone="tiny", attributes=list(NAMES), grid=4, border=0), m,
                         train_config=cfg.to_dict())
    assert main(["evaluate", "--model", str(m), "--data", str(csv_dir), "--out", str(tmp_path / "ev")]) == 0
    trained = (tmp_path / "run" / "splits.csv").read_text()
    assert (tmp_path / "ev" / "splits.csv").read_text() == trained
    assert main(["evaluate", "--model", str(m), "--data", str(csv_dir), "--out", str(tmp_path / "ev0"),
                 "--split-seed", "0"]) == 0
    assert (tmp_path / "ev0" / "splits.csv").read_text() != trained
