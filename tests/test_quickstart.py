"""A tiny end-to-end quickstart (few images, 2 steps per stage) and `siam evaluate` on its output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

import siam
from siam.cli import main
from siam.evaluation.report import MODEL_KEYS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quickstart")
    code = main(["quickstart", "--out", str(out), "--n-sun", "30", "--n-son", "40", "--workers", "1",
                 "--set", "trainer.max_steps=2", "--set", "data.batch_size=8", "--set", "data.son_batch_size=8",
                 "--set", "trainer.progress_bar=false", "--no-explain"])
    assert code == 0
    return out


def test_recipe_file_matches_builtin_recipe() -> None:
    from siam.quickstart import RECIPE

    assert yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text()) == RECIPE


def test_report_has_every_key_for_the_three_models(smoke: Path) -> None:
    report = json.loads((smoke / "report.json").read_text())
    assert set(report["models"]) == {"baseline", "siam_no_finetune", "siam_joint"}
    assert report["noise_floor_rmse"] > 0 and report["wall_time_s"] > 0
    for name, m in report["models"].items():
        assert set(MODEL_KEYS) <= set(m), name
        assert Path(m["checkpoint"]).is_file() and isinstance(m["son_rmse"], float)
    assert report["models"]["baseline"]["sun_map"] is None  # no attributes
    assert isinstance(report["models"]["baseline"]["total_map_r"], float)  # its CAM
    for key in ("sun_map", "template_sign_agreement", "mass_in_mask", "total_map_r"):
        assert isinstance(report["models"]["siam_joint"][key], float), key
    assert [t["name"] for t in report["targets"]][0].startswith("SIAM joint RMSE")
    md = (smoke / "report.md").read_text()
    assert "| RMSE |" in md and "SIAM, no finetuning" in md and "## Targets" in md
    # The chain: no-finetuning starts from the sun stage, joint from no-finetuning.
    meta = siam.checkpoint.read_meta(smoke / "joint" / "model.safetensors")
    assert meta["train_config"]["init_from"].endswith("son_head/model.safetensors")
    # Every stage records that it was trained on the planted world (the baseline in its own process).
    for stage in ("sun", "son_head", "joint", "baseline"):
        assert siam.checkpoint.read_meta(smoke / stage / "model.safetensors")["trained_on"]["kind"] == "synthetic"


def test_rerun_keeps_finished_stages(smoke: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (smoke / "joint" / "model.safetensors").stat().st_mtime_ns
    # Same recipe (the progress bar setting does not count): nothing is retrained.
    code = main(["quickstart", "--out", str(smoke), "--data", str(smoke / "data"), "--set", "trainer.max_steps=2",
                 "--set", "data.batch_size=8", "--set", "data.son_batch_size=8", "--no-explain"])
    out = capsys.readouterr().out
    assert code == 0 and "already trained" in out
    # The closing message says what these models are for, and not for.
    assert "trained on synthetic planted scenes" in out and "not for photographs" in out
    assert (smoke / "joint" / "model.safetensors").stat().st_mtime_ns == before
    # Another recipe must not silently reuse them.
    assert main(["quickstart", "--out", str(smoke), "--data", str(smoke / "data"), "--set", "trainer.max_steps=3",
                 "--no-explain"]) == 2
    assert "trained with another recipe" in capsys.readouterr().err


def test_evaluate_cli_agrees_with_direct_computation(smoke: Path, tmp_path: Path) -> None:
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.transforms import eval_transform

    joint = smoke / "joint" / "model.safetensors"
    code = main(["evaluate", "--data", str(smoke / "data"), "--model", f"siam_joint={joint}",
                 "--model", f"baseline={smoke / 'baseline' / 'model.safetensors'}", "--out", str(tmp_path)])
    assert code == 0
    got = json.loads((tmp_path / "report.json").read_text())["models"]["siam_joint"]
    model = siam.load_checkpoint(joint)
    ds = ScenicOrNot(smoke / "data" / "son", "test", transform=eval_transform(model.preprocessing))
    with torch.no_grad():
        pred = model(torch.stack([ds[i].image for i in range(len(ds))])).score.numpy()
    y = ds.scores.numpy()
    assert got["son_rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - y) ** 2))), rel=1e-5)
    tau = stats.kendalltau(pred, y, variant="b").statistic
    assert (got["son_tau"] is None and math.isnan(tau)) or got["son_tau"] == pytest.approx(tau, abs=1e-6)


def test_evaluate_faithfulness_flag(smoke: Path, tmp_path: Path) -> None:
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.transforms import eval_transform
    from siam.explain.faithfulness import faithfulness

    joint = smoke / "joint" / "model.safetensors"
    base = smoke / "baseline" / "model.safetensors"
    code = main(["evaluate", "--data", str(smoke / "data"), "--model", f"siam_joint={joint}",
                 "--model", f"baseline={base}", "--out", str(tmp_path), "--faithfulness", "4"])
    assert code == 0
    got = json.loads((tmp_path / "report.json").read_text())
    faith = got.get("faithfulness") or got.get("extra", {}).get("faithfulness")
    assert faith is not None and faith["model"] == "siam_joint"
    model = siam.load_checkpoint(joint)
    ds = ScenicOrNot(smoke / "data" / "son", "test", transform=eval_transform(model.preprocessing))
    images = torch.stack([ds[i].image for i in range(min(4, len(ds)))])
    direct = faithfulness(model, images, baseline=siam.load_checkpoint(base), seed=0)
    faith = {k: v for k, v in faith.items() if k != "model"}
    assert set(faith) == set(direct)
    assert json.dumps(faith, sort_keys=True) == json.dumps(json.loads(json.dumps(direct)), sort_keys=True)
    assert main(["evaluate", "--data", str(smoke / "data"), "--model", f"baseline={base}",
                 "--faithfulness", "2"]) == 2


def test_explain_hook_accepts_what_the_quickstart_passes(tmp_path: Path) -> None:
    import inspect

    from siam.explain import quickstart_hook

    inspect.signature(quickstart_hook).bind(out=tmp_path, data=tmp_path, models={}, report={})


def test_chain_takes_the_baseline_core_at_the_next_stage_boundary() -> None:
    """The freed core is taken when a stage starts, never partway through one (a thread count that
    changes mid-stage changes the summation order at a timing-dependent step)."""
    import torch

    from siam.quickstart import _freed_core_callback

    class _Proc:
        code: int | None = None

        def poll(self) -> int | None:
            return self.code

    class _FakeChild:
        proc = _Proc()

    child = _FakeChild()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cb = _freed_core_callback(child, 2)  # type: ignore[arg-type]
        cb.on_train_start(None, None)
        assert torch.get_num_threads() == 1  # baseline still running: keep one thread
        child.proc.code = 0
        cb.on_train_batch_start(None, None, None, 1)
        assert torch.get_num_threads() == 1  # it exited mid-stage: this stage keeps its count
        _freed_core_callback(child, 2).on_train_start(None, None)  # type: ignore[arg-type]
        assert torch.get_num_threads() == 2  # the next stage starts with its core
        torch.set_num_threads(1)
        _freed_core_callback(None, 2).on_train_start(None, None)
        assert torch.get_num_threads() == 2  # baseline already trained earlier: both cores at once
    finally:
        torch.set_num_threads(before)


def test_targets_are_restated_against_measured_ceilings() -> None:
    from siam.quickstart import TARGETS, check_targets

    report = {
        "models": {"siam_joint": {"son_rmse": 0.6, "sun_map": 0.8, "contribution_r": 0.72, "template_r": 0.4,
                                  "template_sign_agreement": 1.0, "mass_in_mask": 0.3, "total_map_r": 0.3},
                   "baseline": {"son_rmse": 0.7, "total_map_r": 0.2}},
        "noise_floor_rmse": 0.4, "wall_time_s": 500.0,
        "ceilings": {"rmse_over_noise_floor": 1.0, "sun_map": 0.89, "mass_in_mask": 0.55, "contribution_r": 0.96,
                     "template_r": 0.5, "template_sign_agreement": 1.0},
    }
    got = {t["name"]: t for t in check_targets(report)}
    assert len(got) == len(TARGETS)
    sun = got["SIAM joint SUN mAP >= 0.90"]
    assert sun["ceiling"] == 0.89 and sun["fraction"] == pytest.approx(0.8 / 0.89) and sun["above_ceiling"] is True
    mass = got["mass_in_mask >= 0.70"]
    assert mass["above_ceiling"] is True and mass["fraction"] == pytest.approx(0.3 / 0.55)
    tr = got["template_r >= 0.80"]
    assert tr["above_ceiling"] is True and tr["fraction"] == pytest.approx(0.4 / 0.5) and not tr["met"]
    cr = got["contribution_r >= 0.90"]
    assert cr["above_ceiling"] is False and cr["fraction"] == pytest.approx(0.75)
    rmse = got["SIAM joint RMSE <= 1.15 x noise floor"]
    assert rmse["value"] == pytest.approx(1.5) and rmse["fraction"] == pytest.approx(1 / 1.5)
    assert rmse["above_ceiling"] is False  # 1.15 x the floor is reachable: the floor itself is 1.0
    assert got["total wall time <= 10 minutes"]["ceiling"] is None
    # without measured ceilings nothing is claimed
    report.pop("ceilings")
    assert all(t["ceiling"] is None and t["above_ceiling"] is None for t in check_targets(report))


def test_quickstart_report_has_the_oracle_ceiling_beside_each_target(smoke: Path) -> None:
    report = json.loads((smoke / "report.json").read_text())
    oracle = report["oracle_f"]
    assert isinstance(oracle["contribution_r"], float)
    assert oracle["template_r"] is None or isinstance(oracle["template_r"], float)  # None: no varying template seen
    assert report["ceilings"]["contribution_r"] == oracle["contribution_r"]
    assert report["ceilings"]["sun_map"] == report["sun_map_ceiling"]
    cr = next(t for t in report["targets"] if t["name"] == "contribution_r >= 0.90")
    assert cr["ceiling"] == oracle["contribution_r"]
    md = (smoke / "report.md").read_text()
    assert "| ceiling | fraction of ceiling | met |" in md


def test_a_model_saved_before_a_config_key_existed_is_still_reused(tmp_path: Path) -> None:
    """Models written before a train-config key existed (no key = its default) are kept on a
    re-run; a model trained with another value of a key is refused."""
    from siam.errors import ConfigError
    from siam.quickstart import trained_model
    from siam.training.config import config_from_dict

    cfg = config_from_dict({"out": str(tmp_path), "stage": "sun", "model": {"backbone": "tiny", "grid": 4}})
    old = cfg.to_dict()
    del old["optim"]["son_weight_mode"]  # a key added later, at its default
    model = siam.build_model(backbone="tiny", grid=4, border=0)
    siam.save_checkpoint(model, tmp_path / "model.safetensors", train_config=old)
    assert trained_model("sun", cfg) == tmp_path / "model.safetensors"
    before_warn = cfg.to_dict()
    before_warn["trainer"]["deterministic"] = False  # the default before "warn": a kernel choice, kept
    siam.save_checkpoint(model, tmp_path / "model.safetensors", train_config=before_warn)
    assert trained_model("sun", cfg) == tmp_path / "model.safetensors"

    other = cfg.to_dict()
    other["optim"]["lr"] = cfg.optim.lr * 2
    siam.save_checkpoint(model, tmp_path / "model.safetensors", train_config=other)
    with pytest.raises(ConfigError, match="another recipe"):
        trained_model("sun", cfg)


def test_quickstart_on_the_csv_copy_with_and_without_planted_truth(smoke: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--data CSV: with the truth `siam data to-csv` carries, the planted metrics and ceilings (the
    data-only ones equal to the synth run's); without it, every planted metric is left out (null,
    never 0), listed in a note, and its target reads n/a."""
    import shutil

    from siam.data.to_csv import convert_to_csv
    from siam.quickstart import PLANTED_ONLY, TARGETS, TRUTH_TARGETS

    csv_dir, out = tmp_path / "csv", tmp_path / "q"
    convert_to_csv(smoke / "data", csv_dir)
    args = ["quickstart", "--out", str(out), "--data", str(csv_dir), "--set", "trainer.max_steps=2",
            "--set", "data.batch_size=8", "--set", "data.son_batch_size=8", "--set", "trainer.progress_bar=false"]
    assert main(args) == 0  # the explanation report is skipped with a note on a CSV folder
    synth = json.loads((smoke / "report.json").read_text())
    got = json.loads((out / "report.json").read_text())
    assert got["data_layout"] == "csv" and got["planted_truth"] is True
    for key in ("template_sign_agreement", "mass_in_mask", "total_map_r", "rmse_over_noise_floor"):
        assert isinstance(got["models"]["siam_joint"][key], float), key
    # what depends on the data only (not on the trained models) is the synth run's
    assert got["noise_floor_rmse"] == synth["noise_floor_rmse"]
    assert got["sun_map_ceiling"] == pytest.approx(synth["sun_map_ceiling"], abs=1e-6)
    for key in ("contribution_r", "template_r", "template_sign_agreement"):
        a, b = synth["oracle_f"][key], got["oracle_f"][key]
        assert (a is None and b is None) or b == pytest.approx(a, abs=1e-6), key
    assert all(t["met"] is not None for t in got["targets"])
    assert got["explain"]["skipped"] and "Explanation report skipped" in (out / "report.md").read_text()
    # the truth it carries makes the copy a planted world: the models say they were trained on one
    assert siam.checkpoint.read_meta(out / "joint" / "model.safetensors")["trained_on"]["kind"] == "synthetic"

    shutil.rmtree(csv_dir / "truth")  # the same folder (so the trained stages are kept), now without truth
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    bare = json.loads((out / "report.json").read_text())
    assert bare["planted_truth"] is False and bare["oracle_f"] is None and bare.get("noise_floor_rmse") is None
    for name, m in bare["models"].items():
        assert isinstance(m["son_rmse"], float), name
        for key in ("contribution_r", "template_r", "template_sign_agreement", "mass_in_mask", "total_map_r",
                    "rmse_over_noise_floor"):
            assert m[key] is None, (name, key)
    assert isinstance(bare["models"]["siam_joint"]["sun_map"], float) and "sun_map_ceiling" not in bare
    na = {t["name"] for t in bare["targets"] if t["met"] is None}
    assert na == {TARGETS[i][0] for i in TRUTH_TARGETS}
    md = (out / "report.md").read_text()
    assert "No planted truth in --data" in md and all(k in md for k in PLANTED_ONLY) and "siam data to-csv" in md
    assert "| n/a |" in md and "n/a without planted truth" in printed and "already trained" in printed
