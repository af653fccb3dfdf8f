"""``siam score`` and ``siam map`` with a model of several targets; one-target folders unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import siam
from siam.cli import main
from siam.data.images import load_image
from siam.data.transforms import eval_transform
from siam.scoring import read_manifest, read_scores
from siam.scoring.batch import score_columns
from siam.scoring.inputs import ScoringError
from tests.scoring.conftest import ATTRIBUTES, BAD_FILES, make_tiny_siam

TARGETS = ("beauty", "safety")


@pytest.fixture(scope="module")
def two_target_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_tiny_siam(seed=5, targets=TARGETS)
    return siam.save_checkpoint(model, tmp_path_factory.mktemp("ckpt2") / "siam2.safetensors")


def test_one_column_per_target_and_score_is_the_first(two_target_ckpt: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["score", str(image_dir), "--checkpoint", str(two_target_ckpt), "--out", str(out), "--workers", "0",
                 "--part-size", "4", "--precision", "fp32", "--no-progress"]) == 0
    table = read_scores(out)
    assert table.column_names == [
        "path", "status", "error", "score", "score_beauty", "score_safety",
        *[f"presence_{a}" for a in ATTRIBUTES], *[f"contribution_{a}" for a in ATTRIBUTES],
        *[f"contribution_{t}_{a}" for t in TARGETS for a in ATTRIBUTES]]
    manifest = read_manifest(out)
    assert manifest["targets"] == list(TARGETS) and manifest["columns"] == table.column_names
    rows = table.to_pydict()
    model = siam.load_checkpoint(two_target_ckpt).requires_grad_(False)
    transform = eval_transform(model.preprocessing)
    bad = {str(image_dir / b) for b in BAD_FILES}
    checked = 0
    for r, path in enumerate(rows["path"]):
        if path in bad:
            assert rows["score_beauty"][r] is None and rows["contribution_safety_trees"][r] is None
            continue
        with torch.inference_mode():
            ref = model(transform(load_image(path))[None])
        assert rows["score"][r] == rows["score_beauty"][r]
        for t, name in enumerate(TARGETS):
            c = [rows[f"contribution_{name}_{a}"][r] for a in ATTRIBUTES]
            assert rows[f"score_{name}"][r] == pytest.approx(float(ref.scores[0, t]), abs=1e-4)
            np.testing.assert_allclose(c, ref.all_contributions[0, t].numpy(), atol=1e-5)
            # the identity per target, from the file alone
            assert rows[f"score_{name}"][r] == pytest.approx(float(model.template_head.bias[t]) + sum(c), abs=1e-4)
        assert [rows[f"contribution_{a}"][r] for a in ATTRIBUTES] == [rows[f"contribution_beauty_{a}"][r]
                                                                       for a in ATTRIBUTES]
        assert abs(rows["score_beauty"][r] - rows["score_safety"][r]) > 1e-3
        checked += 1
    assert checked >= 6


def test_one_target_columns_and_manifest_are_unchanged(siam_ckpt: Path, image_dir: Path, tmp_path: Path) -> None:
    assert score_columns("siam", ["a", "b"], predict_variance=True) == [
        "path", "status", "error", "score", "presence_a", "presence_b", "contribution_a", "contribution_b", "variance"]
    assert score_columns("siam", ["a"], predict_variance=True, targets=("x", "y")) == [
        "path", "status", "error", "score", "score_x", "score_y", "presence_a", "contribution_a", "contribution_x_a",
        "contribution_y_a", "variance", "variance_x", "variance_y"]
    with pytest.raises(ScoringError, match=r"'contribution_x_a'\] would appear twice"):
        score_columns("siam", ["a", "x_a"], targets=("x", "y"))
    out = tmp_path / "one"
    assert main(["score", str(image_dir), "--checkpoint", str(siam_ckpt), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert "targets" not in manifest and not any(c.startswith("score_") for c in manifest["columns"])


def test_map_draws_the_target_asked_for(two_target_ckpt: Path, image_dir: Path, tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for k, src in enumerate(sorted(image_dir.glob("*.jpg"))):
        (images / f"{1000 + k}.jpg").write_bytes(src.read_bytes())
    out = tmp_path / "scores"
    assert main(["score", str(images), "--checkpoint", str(two_target_ckpt), "--out", str(out), "--workers", "0",
                 "--no-progress"]) == 0
    ids = sorted(p.stem for p in images.iterdir())
    votes = tmp_path / "votes.tsv"
    votes.write_text("ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI\n" + "".join(
        f"{i}\t{50 + k}\t{-4 + k}\t5.0\t1.0\t5,5\thttp://www.geograph.org.uk/photo/{k}\n" for k, i in enumerate(ids)))
    rows = read_scores(out).to_pydict()
    for target in TARGETS:
        page = tmp_path / f"{target}.html"
        assert main(["map", "--scores", str(out), "--votes", str(votes), "--out", str(page), "--target", target]) == 0
        text = page.read_text()
        for r in range(len(rows["path"])):
            assert f"{round(rows[f'score_{target}'][r], 4)}" in text
    assert main(["map", "--scores", str(out), "--votes", str(votes), "--out", str(tmp_path / "x.html"),
                 "--target", "comfort"]) == 2
    assert "unknown target 'comfort'" in capsys.readouterr().err
