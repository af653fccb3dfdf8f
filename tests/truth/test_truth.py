"""`siam truth`: the oracle ceiling, the controls, and a tiny end-to-end run (every key of truth.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from siam.cli import main

ROOT = Path(__file__).resolve().parents[2]
ORACLE_WORLD = dict(n_sun=10, n_son=1000, size=(64, 64))


@pytest.fixture(scope="module")
def oracle_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 64 px world (750 SoN training images) and the true masks as a perfect f would give them."""
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.synth import SynthConfig, generate
    from siam.evaluation.planted import load_truth
    from siam.truth.oracle import true_inputs

    root = tmp_path_factory.mktemp("oracle_world")
    generate(root, seed=0, config=SynthConfig(**ORACLE_WORLD), workers=1, overwrite=True)
    truth = load_truth(root / "truth")
    names = truth.attributes
    tr = ScenicOrNot(root / "son", "train", transform=None)
    te = ScenicOrNot(root / "son", "test", transform=None)
    x_tr, p_tr = true_inputs(truth, "son", tr.ids, grid=8, resize=64, crop=64, attributes=names)
    x_te, p_te = true_inputs(truth, "son", te.ids, grid=8, resize=64, crop=64, attributes=names)
    clean = truth.bias + np.einsum("kij,nkij->n", truth.templates, p_tr)  # noiseless planted scores
    return {"truth": truth, "names": names, "x_tr": x_tr, "x_te": x_te, "p_te": p_te, "clean": clean,
            "votes": tr.scores.numpy()}


def test_true_inputs_match_the_planted_grid_when_the_model_sees_the_whole_image(oracle_world: dict) -> None:
    from siam.evaluation.planted import pool_masks

    truth, names = oracle_world["truth"], oracle_world["names"]
    from siam.data.scenic_or_not import ScenicOrNot

    ident = ScenicOrNot(truth.root.parent / "son", "train", transform=None).ids[0]
    masks = truth.masks("son", ident)
    # resize = crop = image size / 1 (64): the model's 8x8 cells are the truth grid's cells
    np.testing.assert_allclose(oracle_world["x_tr"][0], pool_masks(masks, 8).numpy(), atol=1e-5)
    assert len(names) == oracle_world["x_tr"].shape[1]


def test_oracle_on_noiseless_votes_recovers_the_planted_templates(oracle_world: dict) -> None:
    from siam.truth.oracle import HeadRecipe, fit_head, head_recovery

    w = oracle_world
    # the quickstart's son-head recipe (lr 0.01, cosine, smoothness 0.3, batch 16, flips), run to convergence
    recipe = HeadRecipe(lr=0.01, epochs=20, template_smoothness=0.3)
    head = fit_head(w["x_tr"], w["clean"], recipe=recipe, seed=0)
    rec = head_recovery(head, w["x_te"], w["p_te"], w["truth"], w["names"], observed_share=0.002)
    assert rec["template_r"] >= 0.95, rec["per_attribute"]["template_r"]
    assert rec["contribution_r"] >= 0.99
    assert set(rec["per_attribute"]["template_r"]) == {"road", "farming"}  # the spatially varying ones


def test_head_rmse_of_a_hand_set_head_is_the_rmse_around_its_bias() -> None:
    from sklearn.metrics import mean_squared_error

    from siam.models.heads import TemplateHead
    from siam.truth.oracle import head_rmse

    head = TemplateHead(2, grid=3, template_init=0.0, bias=4.0).eval()  # all templates 0: y = b
    x = np.random.default_rng(0).random((5, 2, 3, 3)).astype(np.float32)
    y = np.array([3.0, 4.0, 5.5, 4.0, 2.0])
    assert head_rmse(head, x, y) == pytest.approx(np.sqrt(mean_squared_error(y, np.full(5, 4.0))))
    with torch.no_grad():
        head.templates.zero_()
        head.templates[0, 1, 0, 1, 1] = 2.0  # target 0, attribute 1, template 0, centre cell
    mixing = float(head.mixing[0, 1, 0]) * float(head.weight[0, 1])  # the effective template's scale
    pred = 4.0 + mixing * 2.0 * x[:, 1, 1, 1]
    assert head_rmse(head, x, y) == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-5)


def test_oracle_fit_is_seeded_and_the_seed_matters(oracle_world: dict) -> None:
    from siam.truth.oracle import HeadRecipe, fit_head

    w = oracle_world
    recipe = HeadRecipe(epochs=1)
    a = fit_head(w["x_tr"], w["votes"], recipe=recipe, seed=3).effective_templates().detach()
    b = fit_head(w["x_tr"], w["votes"], recipe=recipe, seed=3).effective_templates().detach()
    c = fit_head(w["x_tr"], w["votes"], recipe=recipe, seed=4).effective_templates().detach()
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="need inputs"):
        fit_head(w["x_tr"][:, 0], w["votes"], recipe=recipe)


def test_shuffled_scores_control_falls_to_zero_where_the_true_scores_are_learned(oracle_world: dict) -> None:
    from siam.truth.controls import shuffled_scores
    from siam.truth.oracle import HeadRecipe

    w = oracle_world
    # f = a perfect f (the true masks): a model that has learned everything there is to learn
    res = shuffled_scores(w["x_tr"], w["votes"], w["x_te"], w["p_te"], w["truth"], w["names"],
                          recipe=HeadRecipe(epochs=6, template_smoothness=0.3), seed=0, observed_share=0.002)
    assert res["reference"]["contribution_r"] >= 0.8  # the same loop on the true (noisy) votes
    assert abs(res["contribution_r"]) <= 0.1
    assert abs(res["template_r"]) < res["reference"]["template_r"]


def test_cascading_randomisation_changes_the_maps_step_by_step() -> None:
    from siam.evaluation.planted import map_spearman
    from siam.models import build_model
    from siam.truth.controls import cascading_randomisation, randomisation_steps

    torch.manual_seed(0)
    model = build_model(backbone="tiny", attributes=["trees", "road", "ocean"], grid=8, border=0).eval()
    with torch.no_grad():  # a model whose maps and templates are not constant (as a trained one)
        model.template_head.templates.uniform_(0, 1)
        model.attribute_head.conv.bias.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(6, 3, 64, 64)
    steps = cascading_randomisation(model, images, seed=0)
    names = [s["name"] for s in steps]
    assert names == [n for n, _ in randomisation_steps(model)]
    assert names[:2] == ["template_head", "attribute_head"] and names[2] == "backbone.6" and names[-1] == "backbone.0"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not changed
    for s in steps:
        assert s["spearman"] is not None and s["spearman"] < 0.95, s
        assert s["per_image"].shape == (6,)
    # the first step re-draws g only: its value is map_spearman of the original and a g-randomised copy
    import copy

    from siam.truth.controls import _randomise

    work = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _randomise(work.template_head, model.template_head, torch.Generator().manual_seed(0))
    with torch.no_grad():
        rho = map_spearman(model(images).contribution_maps.numpy(), work(images).contribution_maps.numpy())
    np.testing.assert_allclose(steps[0]["per_image"], rho, atol=1e-6)


def test_budget_files_match_the_builtin_budgets() -> None:
    from siam.truth.config import BUDGETS, read_budget

    for name in ("quick", "full"):
        assert yaml.safe_load((ROOT / "configs" / f"truth_{name}.yaml").read_text()) == BUDGETS[name]
        assert read_budget(ROOT / "configs" / f"truth_{name}.yaml")[1] == read_budget(name)[1]


def test_bad_budget_keys_and_values_are_rejected(tmp_path: Path) -> None:
    from siam.errors import ConfigError
    from siam.truth.config import budget_from_dict

    with pytest.raises(ConfigError, match="unknown budget keys \\['epochs'\\]"):
        budget_from_dict({"epochs": 3})
    with pytest.raises(ConfigError, match="seeds must be an integer >= 1"):
        budget_from_dict({"seeds": 0})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        budget_from_dict({"overrides": ["trainer.max_steps"]})


def test_bad_flags_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["truth", "--out", str(tmp_path / "a"), "--budget", "huge"]) == 2
    assert "expected one of ['full', 'quick', 'tiny']" in capsys.readouterr().err
    assert main(["truth", "--out", str(tmp_path / "a"), "--seeds", "0", "--budget", "tiny"]) == 2
    assert "--seeds must be an integer >= 1" in capsys.readouterr().err
    assert main(["truth", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "nope"), "--budget", "tiny"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "w" / "sun").mkdir(parents=True)
    (tmp_path / "w" / "son").mkdir()
    (tmp_path / "w" / "son" / "votes.tsv").write_text("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n")
    assert main(["truth", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "w"), "--budget", "tiny"]) == 2
    assert "has no planted truth" in capsys.readouterr().err
    (tmp_path / "c").mkdir()  # a CSV folder without truth/
    for f in ("attributes.csv", "targets.csv"):
        (tmp_path / "c" / f).write_text("path,split,x\n")
    assert main(["truth", "--out", str(tmp_path / "a"), "--data", str(tmp_path / "c"), "--budget", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "has no planted truth" in err and "siam truth" in err and "siam data to-csv --data WORLD" in err
    # --set: a bad key or a missing '=' is refused before any world is generated
    assert main(["truth", "--out", str(tmp_path / "s"), "--budget", "tiny", "--set", "optim.no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err and not (tmp_path / "s" / "data").exists()
    assert main(["truth", "--out", str(tmp_path / "s"), "--budget", "tiny", "--set", "optim.mask_weight"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


# --- a tiny end-to-end run ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("truth")
    assert main(["truth", "--out", str(out), "--budget", "tiny", "--seeds", "2"]) == 0
    return out


def _stats(d: dict, n: int) -> None:
    assert set(d) >= {"mean", "sd", "values"} and len(d["values"]) == n, d


def test_tiny_run_writes_every_key_of_truth_json(tiny_run: Path) -> None:
    from siam.truth.report import METRICS

    r = json.loads((tiny_run / "truth.json").read_text())
    assert r["seeds"] == [0, 1] and r["budget"] == "tiny" and r["wall_time_s"] > 0 and r["noise_floor_rmse"] > 0
    for name in ("siam_joint", "siam_no_finetune", "baseline"):
        for metric in METRICS:
            _stats(r["models"][name][metric], 2)
    assert r["models"]["siam_joint"]["rmse_over_noise_floor"]["mean"] > 0
    assert r["models"]["baseline"]["total_map_r"]["values"][0] is not None  # its CAM
    assert r["models"]["baseline"]["contribution_r"]["applies"] is False
    for k in ("sun_map", "mass_in_mask", "contribution_r", "template_r", "rmse_over_noise_floor"):
        _stats(r["ceilings"][k], 2 if k in ("contribution_r", "template_r", "rmse_over_noise_floor") else 1)
    # the RMSE's ceiling is the oracle-f run's ratio, and the fraction is that over the model's
    oracle_rmse = r["ceilings"]["rmse_over_noise_floor"]["mean"]
    assert oracle_rmse > 0 and r["fraction_of_ceiling"]["siam_joint"]["rmse_over_noise_floor"] == pytest.approx(
        oracle_rmse / r["models"]["siam_joint"]["rmse_over_noise_floor"]["mean"])
    for name in ("siam_joint", "siam_no_finetune", "baseline"):
        assert set(r["fraction_of_ceiling"][name]) == set(METRICS)
    j = r["models"]["siam_joint"]["contribution_r"]["mean"]
    c = r["ceilings"]["contribution_r"]["mean"]
    assert r["fraction_of_ceiling"]["siam_joint"]["contribution_r"] == pytest.approx(j / c)
    _stats(r["controls"]["shuffled_scores"]["contribution_r"], 2)
    _stats(r["controls"]["shuffled_scores"]["template_r"], 2)
    steps = r["controls"]["randomised"]["steps"]
    assert [s["name"] for s in steps][:2] == ["template_head", "attribute_head"] and len(steps) == 9
    assert all("spearman" in s for s in steps)
    _stats(r["decorrelated"]["siam_joint"]["contribution_r"], 2)
    for k in ("siam_joint", "gradcam_baseline", "random"):
        _stats(r["correctness"][k], 2)
    for name in ("siam_joint", "siam_no_finetune", "oracle_f"):
        rows = r["per_attribute"][name]
        assert rows and set(rows[0]) == {"attribute", "planted_effect", "learned_effect", "contribution_r",
                                         "template_r", "map_coverage_r", "train_presence"}
    counts = r["test_counts"]["per_attribute"]
    assert counts and all(set(v) == {"sun", "son"} for v in counts.values())
    md = (tiny_run / "truth.md").read_text()
    assert "## Planted-truth metrics" in md and "## Controls" in md and "## Correctness (FunnyBirds)" in md


def test_rerun_reuses_finished_runs(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_run / "seed_1" / "joint" / "model.safetensors"
    before = model.stat().st_mtime_ns
    world = (tiny_run / "test_world" / "truth" / "meta.json").stat().st_mtime_ns
    assert main(["truth", "--out", str(tiny_run), "--budget", "tiny", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "seed 1 joint: already trained" in out and "test world: kept" in out and "oracle inputs: kept" in out
    assert model.stat().st_mtime_ns == before
    assert (tiny_run / "test_world" / "truth" / "meta.json").stat().st_mtime_ns == world


def test_spread_refits_g_on_the_runs_own_inputs(tiny_run: Path) -> None:
    """python -m siam.truth.spread on a finished run refits g over exactly the inputs the run used:
    its oracle refits are the run's oracle-f ceiling seed for seed, and its refit over seed 1's
    frozen f with seed 1 is the shuffled control's reference fit (true scores) of seed 1."""
    from siam.truth.spread import main as spread_main

    args = [str(tiny_run), "--budget", "tiny", "--inputs", "oracle", "--inputs", "f1", "--seeds", "2"]
    assert spread_main(args) == 0
    got = json.loads((tiny_run / "spread.json").read_text())["results"]
    r = json.loads((tiny_run / "truth.json").read_text())
    # (f's maps may differ in the last bits: spread runs on one thread, the run maybe not)
    assert got["oracle/base"]["contribution_r"]["values"] == pytest.approx(r["ceilings"]["contribution_r"]["values"])
    assert got["oracle/base"]["template_r"]["values"] == pytest.approx(r["ceilings"]["template_r"]["values"])
    reference = r["controls"]["shuffled_scores"]["reference"]["contribution_r"]["values"]
    assert got["f1/base"]["contribution_r"]["values"][1] == pytest.approx(reference[1], rel=1e-4)
    assert got["f1/base"]["contribution_r"]["values"] != got["oracle/base"]["contribution_r"]["values"]


def test_bootstrap_mean_ap_agrees_with_sklearn_without_ties() -> None:
    from sklearn.metrics import average_precision_score

    from siam.truth.run import _mean_ap

    rng = np.random.default_rng(0)
    scores = rng.random((200, 4))
    positive = rng.random((200, 4)) < 0.2
    positive[:, 3] = False  # no positive: left out, as in the report's mAP
    want = np.mean([average_precision_score(positive[:, k], scores[:, k]) for k in range(3)])
    assert _mean_ap(scores, positive) == pytest.approx(want, abs=1e-12)


def test_data_flag_uses_the_folders_own_test_split(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "on_data"
    assert main(["truth", "--out", str(out), "--data", str(tiny_run / "data"), "--budget", "tiny", "--seeds", "1",
                 "--set", "optim.son_weight=0.2"]) == 0
    r = json.loads((out / "truth.json").read_text())
    assert r["worlds"]["test_split"] == "test" and r["worlds"]["train"] == str(tiny_run / "data")
    # --set: after the budget's own overrides, in the budget's name, and in every stage's recipe
    assert r["budget"] == "tiny + optim.son_weight=0.2" and r["budget_config"]["overrides"][-1] == "optim.son_weight=0.2"
    from siam.checkpoint import read_meta

    assert read_meta(out / "seed_0" / "joint" / "model.safetensors")["train_config"]["optim"]["son_weight"] == 0.2
    assert r["test_counts"]["split"] == "test" and not (out / "test_world").exists()
    assert any("own test split" in n for n in r["notes"])
    # written by siam synth: the generator can still re-render it and build the decorrelated world
    assert r["correctness"]["siam_joint"]["values"] and r["decorrelated"]["siam_joint"]["contribution_r"]["values"]
    assert r["models"]["siam_joint"]["contribution_r"]["values"][0] is not None

    # The CSV copy (`siam data to-csv` carries truth/): the same run, names resolved through
    # truth/csv_ids.csv; what depends on the data only (not on training) is the synth folder's.
    from siam.data.to_csv import convert_to_csv

    convert_to_csv(tiny_run / "data", tmp_path / "csv")
    out_csv = tmp_path / "on_csv"
    assert main(["truth", "--out", str(out_csv), "--data", str(tmp_path / "csv"), "--budget", "tiny", "--seeds", "1"]) == 0
    c = json.loads((out_csv / "truth.json").read_text())
    assert c["worlds"]["test_split"] == "test" and c["test_counts"] == r["test_counts"]
    assert c["noise_floor_rmse"] == r["noise_floor_rmse"]
    for key in ("sun_map", "mass_in_mask", "contribution_r", "template_r"):
        assert c["ceilings"][key]["values"] == pytest.approx(r["ceilings"][key]["values"], abs=1e-6), key
    # the generator re-renders the copy's scenes (by their IDs) and builds the decorrelated world
    assert len(c["correctness"]["siam_joint"]["values"]) == 1 and c["decorrelated"]["siam_joint"]["contribution_r"]["values"]
    assert c["models"]["siam_joint"]["contribution_r"]["values"][0] is not None


def test_budget_recipes_build_every_stage_with_their_epochs(tmp_path: Path) -> None:
    from siam.quickstart import RECIPE, stage_configs
    from siam.truth.config import read_budget

    _, quick = read_budget("quick")
    raw, rest = quick.recipe(RECIPE)
    cfgs = stage_configs(tmp_path, tmp_path, raw, rest)
    epochs = {n: c.trainer.max_epochs for n, c in cfgs.items()}
    assert epochs == {"baseline": 12, "sun": 24, "son_head": 6, "joint": 12}
    _, short = read_budget(ROOT / "configs" / "truth_short.yaml")  # the quick budget until 2026-12-02
    raw, rest = short.recipe(RECIPE)
    short_epochs = {n: c.trainer.max_epochs for n, c in stage_configs(tmp_path, tmp_path, raw, rest).items()}
    assert short_epochs == {"baseline": 12, "sun": 12, "son_head": 6, "joint": 6}
    assert RECIPE["stages"]["sun"]["trainer"]["max_epochs"] == 16  # the quickstart's recipe is not changed
    _, full = read_budget("full")
    raw, rest = full.recipe(RECIPE)
    cfgs = stage_configs(tmp_path, tmp_path, raw, rest)
    assert cfgs["joint"].trainer.max_epochs == 20 and cfgs["joint"].trainer.num_threads is None
    assert cfgs["sun"].trainer.accelerator == "auto"


def test_help_names_the_flags_and_budgets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["truth", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--data", "--seeds", "--budget", "--set", "quick", "full"):
        assert flag in text


def test_seed_stats_and_where_the_gaps_are() -> None:
    from siam.truth.report import _gaps, seed_stats

    s = seed_stats([0.5, 0.7, float("nan")])
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s["values"] == [0.5, 0.7, None]
    assert seed_stats([0.3]) == {"mean": 0.3, "sd": 0.0, "values": [0.3]}

    def m(v: float | None) -> dict:
        return {"mean": v}

    report = {"models": {"siam_joint": {"contribution_r": m(0.7), "template_r": m(0.2), "sun_map": m(0.6),
                                        "mass_in_mask": m(0.25)},
                         "siam_no_finetune": {"contribution_r": m(0.65), "template_r": m(0.1)}},
              "ceilings": {"contribution_r": m(0.95), "template_r": m(0.5), "sun_map": m(0.89), "mass_in_mask": m(0.55)}}
    gaps = _gaps(report)
    assert "The gap to the oracle (0.250) is f's" in gaps[0] and "(0.050) is g's recipe" in gaps[0]
    assert gaps[1].startswith("template_r: SIAM joint 0.200") and "(0.300) is f's" in gaps[1]
    assert "oracle-f value is not an upper bound" in gaps[1] and "not an upper bound" not in gaps[0]
    assert "the gap (0.290) is f's alone" in gaps[2] and "the gap (0.300) is f's alone" in gaps[3]


def test_correctness_effects_are_score_changes_of_the_re_rendered_scenes(oracle_world: dict) -> None:
    from PIL import Image

    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.transforms import Preprocessing, eval_transform
    from siam.evaluation.planted import correctness
    from siam.models import build_model
    from siam.models.baseline import build_baseline
    from siam.truth.correctness import gradcam_correctness, render_scene_set, siam_correctness

    root = oracle_world["truth"].root.parent
    names = oracle_world["names"]
    ids = ScenicOrNot(root / "son", "test", transform=None).ids[:3]
    scenes = render_scene_set(root, ids, names)
    for n, ident in enumerate(ids):  # the originals are exactly the written files
        written = np.asarray(Image.open(root / "son" / "images" / f"{ident}.jpg").convert("RGB"))
        np.testing.assert_array_equal(scenes.images[n], written)
        shown = scenes.masks[n].reshape(len(names), -1).any(1)
        np.testing.assert_array_equal(scenes.present[n], shown)
    assert len(scenes.images) == len(ids) + int(scenes.present.sum())

    pre = Preprocessing(resize=64, crop=64)
    torch.manual_seed(0)
    model = build_model(backbone="tiny", attributes=list(reversed(names)), grid=8, border=0, preprocessing=pre).eval()
    with torch.no_grad():
        model.template_head.templates.uniform_(0, 1)
        model.attribute_head.conv.bias.fill_(0.2)
    got = siam_correctness(model, scenes)
    tf = eval_transform(pre)
    with torch.no_grad():
        out = model(torch.stack([tf(im) for im in scenes.images]))
    score = out.score.numpy().astype(np.float64)
    n, k = np.argwhere(scenes.present)[0]
    assert got["effects"][n, k] == pytest.approx(score[n] - score[scenes.index[n, k]], abs=1e-5)
    assert np.isnan(got["effects"][~scenes.present]).all()
    # attributions in the scenes' attribute order, although the model's order is reversed
    pos = list(model.attributes).index(names[k])
    assert got["attributions"][n, k] == pytest.approx(float(out.contributions[n, pos]), abs=1e-5)
    np.testing.assert_allclose(got["correctness"], correctness(got["attributions"], np.nan_to_num(got["effects"]),
                                                               scenes.present), equal_nan=True)
    base = build_baseline(backbone="tiny", preprocessing=pre).eval()
    gc = gradcam_correctness(base, scenes)
    assert gc["attributions"].shape == scenes.present.shape and (gc["attributions"] >= 0).all()
    ok = np.isfinite(gc["correctness"])
    assert ((gc["correctness"][ok] >= 0) & (gc["correctness"][ok] <= 1)).all()


def test_data_not_written_by_siam_synth_skips_what_needs_the_generator(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    world = tmp_path / "foreign"
    shutil.copytree(tiny_run / "data", world)
    meta_p = world / "truth" / "meta.json"
    meta = json.loads(meta_p.read_text())
    meta.pop("generator")
    meta.pop("settings")
    meta_p.write_text(json.dumps(meta))
    out = tmp_path / "on_foreign"
    assert main(["truth", "--out", str(out), "--data", str(world), "--budget", "tiny", "--seeds", "1"]) == 0
    r = json.loads((out / "truth.json").read_text())
    assert r["correctness"] == {} and r["decorrelated"] == {}
    assert any("not written by siam synth" in n and "skipped" in n for n in r["notes"])
    assert r["models"]["siam_joint"]["correctness"]["values"] == [None]
    assert "not written by siam synth" in (out / "truth.md").read_text()
