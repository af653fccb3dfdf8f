"""Planted truth on the CSV copy of a planted world (`siam data to-csv` carries truth/ with a
path -> masks mapping): `siam evaluate` gives the same planted-truth metrics on both layouts."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import siam
from siam.cli import main
from siam.data.to_csv import IDS_FILE, convert_to_csv
from siam.errors import DatasetError
from siam.evaluation import planted as P

#: Keys that need planted truth (null without it).
PLANTED_KEYS = ("contribution_r", "template_r", "template_sign_agreement", "mass_in_mask", "total_map_r",
                "total_map_constant_share", "rmse_over_noise_floor")
# Both layouts decode the same files with the same transform; only the order of the rows may differ.
TOL = 1e-6


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from siam.data.transforms import Preprocessing
    from siam.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("csv_truth")
    generate(root / "world", seed=0, config=SynthConfig(n_sun=30, n_son=80, size=(64, 64), grid=4), workers=1,
             overwrite=True)
    convert_to_csv(root / "world", root / "csv")
    truth = P.load_truth(root / "world" / "truth")
    torch.manual_seed(0)
    model = siam.build_model(backbone="tiny", attributes=list(truth.attributes), grid=4, border=0,
                             preprocessing=Preprocessing(resize=64, crop=64, max_rotation=0.0))
    with torch.no_grad():  # templates that vary, so every recovery metric has a non-trivial value
        model.template_head.templates.normal_()
    siam.save_checkpoint(model, root / "m.safetensors")
    return {"root": root, "world": root / "world", "csv": root / "csv", "model": root / "m.safetensors"}


def _evaluate(model: Path, data: Path, out: Path) -> dict:
    assert main(["evaluate", "--model", f"m={model}", "--data", str(data), "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def _ids(csv_dir: Path) -> dict[str, tuple[str, str]]:
    return P.read_ids(csv_dir / "truth" / IDS_FILE)


def test_to_csv_carries_the_truth_and_maps_every_csv_path_to_its_masks(world: dict[str, Path]) -> None:
    from siam.data.scenic_or_not import ScenicOrNot

    csv_dir, src = world["csv"], world["world"]
    ids = _ids(csv_dir)
    rows = {r[0] for f in ("attributes.csv", "targets.csv") for r in list(csv.reader(open(csv_dir / f)))[1:]}
    assert set(ids) == rows  # one mapping row per CSV row, no more
    # every file of truth/ is carried, hard-linked (same file system)
    for f in (p for p in (src / "truth").rglob("*") if p.is_file()):
        assert os.path.samefile(f, csv_dir / "truth" / f.relative_to(src / "truth")), f
    t_csv, t_orig = P.load_csv_truth(csv_dir), P.load_truth(src / "truth")
    assert t_csv is not None and t_orig.ids is None
    son = ScenicOrNot(src / "son", "all", transform=None)
    for pid in son.ids[:5]:
        path = f"images/son/{pid}.jpg"
        assert ids[path] == ("son", str(pid))
        np.testing.assert_array_equal(t_csv.masks("son", path), t_orig.masks("son", str(pid)))
    sun_path, (dataset, key) = next((p, v) for p, v in ids.items() if v[0] == "sun")
    np.testing.assert_array_equal(t_csv.masks("sun", sun_path), t_orig.masks("sun", key))
    # strict: a path without a row, or asked for as the other dataset, is an error (never a skip)
    with pytest.raises(DatasetError, match="has no row in"):
        t_csv.masks("son", str(son.ids[0]))  # the native ID is not a CSV path
    with pytest.raises(DatasetError, match="maps it to sun masks"):
        t_csv.masks("son", sun_path)


def test_evaluate_on_the_csv_copy_gives_the_planted_metrics_of_the_original(world: dict[str, Path], tmp_path: Path) -> None:
    orig = _evaluate(world["model"], world["world"], tmp_path / "orig")
    conv = _evaluate(world["model"], world["csv"], tmp_path / "csv")
    assert conv["noise_floor_rmse"] == orig["noise_floor_rmse"] > 0
    assert conv["sun_map_ceiling"] == pytest.approx(orig["sun_map_ceiling"], abs=TOL)
    a, b = orig["models"]["m"], conv["models"]["m"]
    assert a["son_n"] == b["son_n"] > 0
    for key in ("son_rmse", "son_tau", "sun_map", *PLANTED_KEYS):
        assert a[key] is not None and b[key] == pytest.approx(a[key], abs=TOL), key
    for key in ("contribution_r", "template_r", "template_sign_agreement"):
        pa, pb = a["planted"][key]["per_attribute"], b["planted"][key]["per_attribute"]
        assert pa.keys() == pb.keys() and all(pb[k] == pytest.approx(pa[k], abs=TOL) for k in pa), key
    assert a["planted"]["mass_in_mask_pairs"] == b["planted"]["mass_in_mask_pairs"] > 0


def test_csv_without_truth_reports_rmse_tau_and_ap_only(world: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(world["csv"], bare, ignore=shutil.ignore_patterns("truth"))
    got = _evaluate(world["model"], bare, tmp_path / "out")
    m = got["models"]["m"]
    assert all(m[k] is not None for k in ("son_rmse", "son_tau", "sun_map"))
    assert all(m[k] is None for k in PLANTED_KEYS) and "planted" not in m
    assert got.get("noise_floor_rmse") is None and "sun_map_ceiling" not in got


def test_a_csv_path_without_masks_or_a_truth_without_its_mapping_is_a_clear_error(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(world["csv"], broken)
    ids_p = broken / "truth" / IDS_FILE
    rows = list(csv.reader(open(ids_p)))
    test_paths = {r[0] for r in csv.reader(open(broken / "targets.csv")) if r[1] == "test"}
    dropped = next(r for r in rows[1:] if r[0] in test_paths)
    with open(ids_p, "w", newline="") as fh:
        csv.writer(fh).writerows([r for r in rows if r is not dropped])
    out = tmp_path / "o"
    assert main(["evaluate", "--model", str(world["model"]), "--data", str(broken), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert repr(dropped[0]) in err and "has no row in" in err
    ids_p.unlink()
    assert main(["evaluate", "--model", str(world["model"]), "--data", str(broken), "--out", str(out)]) == 2
    assert f"has no {IDS_FILE}" in capsys.readouterr().err
    ids_p.write_text("path,dataset,key\nimages/son/1.jpg,scenic,1\n")
    with pytest.raises(DatasetError, match=r"line 2, column dataset: got 'scenic'; allowed: \['sun', 'son'\]"):
        P.load_csv_truth(broken)
