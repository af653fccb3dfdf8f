from __future__ import annotations

from pathlib import Path

import pytest

import siam
from siam.cli import main
from siam.evaluation.report import build_report, render_markdown, write_report


def test_evaluate_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model", str(tmp_path / "missing.safetensors"), "--data", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    m = tmp_path / "m.safetensors"
    siam.save_checkpoint(siam.build_model(backbone="tiny", attributes=["a"], grid=4, border=0), m)
    assert main(["evaluate", "--model", f"x={m}", "--model", f"x={m}", "--data", str(tmp_path)]) == 2
    assert "used twice" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(m)]) == 2
    assert "nothing to evaluate on" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(m), "--data", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert main(["evaluate", "--model", str(tmp_path / "empty_run"), "--data", str(tmp_path)]) == 2
    assert "is a folder without model.safetensors" in capsys.readouterr().err


def test_evaluate_names_a_training_folder_by_its_own_name(tmp_path: Path) -> None:
    from siam.evaluation.cli import _parse_models

    run = tmp_path / "runs" / "joint"
    siam.save_checkpoint(siam.build_model(backbone="tiny", attributes=["a"], grid=4, border=0), run / "model.safetensors")
    assert _parse_models([str(run), f"mine={run}"]) == {"joint": run / "model.safetensors",
                                                       "mine": run / "model.safetensors"}
    assert _parse_models([str(run / "model.safetensors")]) == {"joint": run / "model.safetensors"}


def test_report_orders_models_marks_best_and_fills_missing_keys(tmp_path: Path) -> None:
    report = build_report(
        {"siam_joint": {"son_rmse": 0.5, "son_tau": 0.7, "sun_map": 0.8},
         "baseline": {"son_rmse": 0.6, "son_tau": 0.72, "total_map_r": float("nan")}},
        noise_floor_rmse=0.45, wall_time_s=12.0,
    )
    assert list(report["models"]) == ["baseline", "siam_joint"]
    assert report["models"]["baseline"]["sun_map"] is None and report["models"]["baseline"]["total_map_r"] is None
    md = render_markdown(report)
    assert "| RMSE | 0.600 | **0.500** |" in md and "| Kendall's tau-b | **0.720** | 0.700 |" in md
    j, m = write_report(report, tmp_path)
    assert j.read_text().count('"son_rmse"') == 2 and m.read_text() == md
