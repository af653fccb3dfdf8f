"""Explanations of a model with several targets (beauty and safety over the same attribute maps),
and a one-target model's records, unchanged from before several targets existed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import siam
from siam.cli import main
from siam.explain import explain
from siam.explain.explanation import JSON_KEYS, TARGET_JSON_KEYS, error_record, load_explanation
from siam.explain.figures import plot_explanation

from .conftest import TARGETS, make_image

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_one_target_record_is_unchanged_from_before_several_targets(tmp_path) -> None:
    """tests/fixtures/one_target_v1_explanation.json was written by the explain code before several
    targets existed, for the one-target model file of that time: same keys, same values."""
    from PIL import Image

    golden = json.loads((FIXTURES / "one_target_v1_explanation.json").read_text())
    model = siam.load_checkpoint(FIXTURES / "one_target_v1.safetensors").eval()
    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((100, 80), Image.Resampling.NEAREST)
    e = explain(model, img, name="golden.png", top_k=2)
    rec = e.to_json(maps_path="golden.npz")
    rec["intervention"] = e.intervene(remove=["trees"]).to_json()
    want = golden["record"]
    assert list(rec) == list(want)  # same keys, same order: no target keys for one target
    assert list(rec["intervention"]) == list(want["intervention"])
    _close(json.loads(json.dumps(rec)), want)
    with np.load(e.save_npz(tmp_path / "g.npz"), allow_pickle=False) as z:
        assert sorted(z.files) == golden["npz_keys"]


def _close(a, b) -> bool:
    """Nested equality, floats within 1e-6 (a different CPU may round the forward pass differently)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (a, b)
        return all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b), (a, b)
        return all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-6, rel=1e-6)
        return True
    assert a == b, (a, b)
    return True


def _forward(model, image):
    from siam.data.transforms import eval_transform

    with torch.no_grad():
        return model(eval_transform(model.preprocessing)(image)[None])


def test_every_target_is_explained_and_the_identity_holds_per_target(model2, image) -> None:
    e = explain(model2, image, top_k=3)
    out = _forward(model2, image)
    assert e.targets == TARGETS and e.target == "beauty" and e.several_targets
    assert abs(e.all_scores[0] - e.all_scores[1]) > 1e-3  # the targets really differ
    for t, name in enumerate(TARGETS):
        v = e.for_target(name)
        assert v.target == name and v.score == e.for_target(t).score
        # score_t = b_t + sum_i c_t,i and c_t,i = sum of its contribution map, for every target
        assert v.score == pytest.approx(v.bias + v.contributions.sum(), abs=1e-5)
        np.testing.assert_allclose(v.contribution_maps.sum((1, 2)), v.contributions, atol=1e-6)
        assert v.total_map().sum() == pytest.approx(v.score - v.bias, abs=1e-5)
        np.testing.assert_allclose(v.score, out.scores[0, t].item(), rtol=1e-6)
        np.testing.assert_allclose(v.contributions, out.all_contributions[0, t].numpy(), atol=1e-6)
        assert v.bias == pytest.approx(float(model2.template_head.bias[t].detach()))
        np.testing.assert_array_equal(v.maps, e.maps)  # the same attribute maps for every target
    shown = explain(model2, image, target="safety")
    assert shown.target == "safety" and shown.score == e.for_target(1).score
    np.testing.assert_array_equal(shown.all_contributions, e.all_contributions)
    with pytest.raises(ValueError, match=r"unknown target 'nope'.*beauty"):
        explain(model2, image, target="nope")
    with pytest.raises(ValueError, match="unknown target"):
        e.for_target("nope")


def test_record_names_the_target_and_carries_every_target(model2, image, tmp_path) -> None:
    e = explain(model2, image, target="safety", top_k=2)
    rec = json.loads(json.dumps(e.to_json(maps_path="x.npz")))
    assert list(rec) == [*JSON_KEYS, *TARGET_JSON_KEYS]
    assert rec["target"] == "safety" and rec["score"] == e.for_target("safety").score
    assert [t["name"] for t in rec["targets"]] == list(TARGETS)
    for entry, v in zip(rec["targets"], e.per_target()):
        assert entry["score"] == v.score and entry["bias"] == v.bias
        assert list(entry["contributions"]) == list(e.attributes)
        assert list(entry["contributions"].values()) == pytest.approx(v.contributions.tolist())
        assert entry["score"] == pytest.approx(entry["bias"] + sum(entry["contributions"].values()), abs=1e-5)
        assert entry["top_positive"] == v.top_positive()
    npz = e.save_npz(tmp_path / "e.npz")
    (tmp_path / "e.json").write_text(json.dumps(e.to_json(maps_path=str(npz))))
    back = load_explanation(tmp_path / "e.json")
    assert back.targets == TARGETS and back.target == "safety" and back.score == e.score
    np.testing.assert_array_equal(back.all_contribution_maps, e.all_contribution_maps)
    np.testing.assert_array_equal(back.for_target("beauty").contribution_maps, e.for_target(0).contribution_maps)
    it = e.intervene(remove=["trees"]).to_json()
    assert it["target"] == "safety"
    assert it["score"] == pytest.approx(e.score - e.contributions[e.index("trees")], abs=1e-6)
    err = error_record("x.png", "broken", model=model2, target="safety")
    assert list(err) == list(rec) and err["target"] == "safety"
    assert [t["name"] for t in err["targets"]] == list(TARGETS) and err["targets"][0]["score"] is None


def test_explanation_rejects_inconsistent_target_arrays(model2, image) -> None:
    from dataclasses import replace

    e = explain(model2, image)
    with pytest.raises(ValueError, match="per-target arrays"):
        replace(e, all_scores=e.all_scores[:1])
    with pytest.raises(ValueError, match="needs all_scores"):
        replace(e, all_contributions=None)
    with pytest.raises(ValueError, match="not one of the targets"):
        replace(e, target="other")


def test_figure_names_its_target(model2, image) -> None:
    e = explain(model2, image)
    for v in e.per_target():
        fig = plot_explanation(v, image)
        texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]
        assert any(f"target {v.target}" in t for t in texts)
        assert any(f"{v.target} {v.score:.2f} = bias {v.bias:.2f}" in t for t in texts)


def test_cli_shows_every_target_or_the_one_asked_for(tmp_path, checkpoints, capsys) -> None:
    img = tmp_path / "a.png"
    make_image(3, (90, 70)).save(img)
    model = siam.load_checkpoint(checkpoints["siam2"])
    ref = explain(model, str(img))
    out = tmp_path / "all"
    assert main(["explain", "--checkpoint", str(checkpoints["siam2"]), str(img), "--out", str(out),
                 "--remove", "trees"]) == 0
    rec = json.loads((out / "a.json").read_text())
    assert rec["target"] == "beauty" and rec["score"] == ref.score
    assert [t["score"] for t in rec["targets"]] == ref.all_scores.tolist()
    for t, entry in zip(TARGETS, rec["targets"]):
        assert Path(entry["figure"]) == (out / f"a.target-{t}.png").resolve() and Path(entry["figure"]).is_file()
        v = ref.for_target(t)
        assert entry["intervention"]["target"] == t
        assert entry["intervention"]["score"] == pytest.approx(v.score - v.contributions[v.index("trees")], abs=1e-5)
    assert rec["intervention"] == rec["targets"][0]["intervention"] and not (out / "a.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"][0]["scores"] == dict(zip(TARGETS, ref.all_scores.tolist()))
    stdout = capsys.readouterr().out
    assert "intervention: beauty" in stdout and "intervention: safety" in stdout
    with np.load(rec["maps"], allow_pickle=False) as z:
        np.testing.assert_array_equal(z["all_contribution_maps"], ref.all_contribution_maps)

    one = tmp_path / "one"
    assert main(["explain", "--checkpoint", str(checkpoints["siam2"]), str(img), "--out", str(one),
                 "--target", "safety"]) == 0
    rec = json.loads((one / "a.json").read_text())
    assert rec["target"] == "safety" and rec["score"] == ref.for_target("safety").score
    assert len(rec["targets"]) == 2 and sorted(p.name for p in one.glob("*.png")) == ["a.target-safety.png"]
    assert main(["explain", "--checkpoint", str(checkpoints["siam2"]), str(img), "--out", str(tmp_path / "x"),
                 "--target", "comfort"]) == 2
    err = capsys.readouterr().err
    assert "--target" in err and "comfort" in err and "beauty" in err
    assert not (tmp_path / "x").exists()


def test_report_has_a_section_per_target(tmp_path, checkpoints, model2) -> None:
    from siam.explain.batch import explain_many
    from siam.explain.summary import attribute_ranking

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        make_image(50 + i, (90, 72)).save(d / f"p{i}.png")
    out = tmp_path / "rep"
    assert main(["report", "--checkpoint", str(checkpoints["siam2"]), "--images", str(d), "--out", str(out),
                 "--panels", "2", "--faithfulness-images", "0"]) == 0
    page = (out / "report.html").read_text()
    data = json.loads((out / "report_data.json").read_text())
    explained = explain_many(model2, sorted(str(p) for p in d.iterdir()))
    assert [t["name"] for t in data["targets"]] == list(TARGETS)
    figures = {p.name for p in (out / "figures").glob("*.png")}
    for t, name in enumerate(TARGETS):
        assert f"{name}: templates (Fig. 4)" in page and f"{name}: attribute ranking" in page
        assert f"{name}: explanations" in page
        assert {f"templates_{name}.png", f"ranking_{name}.png", f"panel_{name}_00.png"} <= figures
        want = attribute_ranking(explained.for_target(t).contributions, model2.attributes)
        assert data["targets"][t]["ranking"]["order"] == want["order"]
        assert [r["mean"] for r in data["targets"][t]["ranking"]["attributes"]] == pytest.approx(
            [r["mean"] for r in want["attributes"]])
        with np.load(out / f"templates_{name}.npz") as z, torch.no_grad():
            np.testing.assert_allclose(z["templates"], model2.effective_templates(t).numpy(), rtol=1e-6)
        panel = data["targets"][t]["panels"][0]
        assert panel["target"] == name  # the panel's record shows this target (and carries both)
        assert panel["score"] == max(e.for_target(t).score for e in explained.explanations)
    assert not np.allclose(explained.for_target(0).contributions, explained.for_target(1).contributions)
