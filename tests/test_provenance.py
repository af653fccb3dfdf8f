"""What a checkpoint was trained on, and the note every surface shows when a synthetic-trained model
meets a photograph (JSON, figure, HTML report, web API, ``siam explain``, ``siam score``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siam
from siam.checkpoint import model_meta, read_meta
from siam.cli import main
from siam.explain.explanation import explain
from siam.provenance import describe_dataset, synth_world, synthetic_note, trained_on, trained_on_record

from .training.helpers import NAMES, tiny_config, write_folder


def _mark_synthetic(root: Path, seed: int = 7) -> Path:
    (root / "truth").mkdir(parents=True, exist_ok=True)
    (root / "truth" / "meta.json").write_text(json.dumps({"generator": "siam synth", "seed": seed}))
    return root


def _tiny(**kw) -> siam.SIAM:
    torch.manual_seed(0)
    from siam.data.transforms import Preprocessing

    return siam.build_model(backbone="tiny", attributes=NAMES, grid=4, border=0,
                            preprocessing=Preprocessing(resize=32, crop=32), **kw)


@pytest.fixture()
def worlds(tmp_path: Path) -> dict[str, Path]:
    """A synthetic world with one image, a photo outside it, and models trained on each kind."""
    world = _mark_synthetic(tmp_path / "world")
    (world / "son" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(world / "son" / "images" / "1.png")
    (tmp_path / "photos").mkdir()
    Image.fromarray(pixels[::-1]).save(tmp_path / "photos" / "lake.png")
    (tmp_path / "real" / "sun").mkdir(parents=True)
    model = _tiny()
    synth = siam.save_checkpoint(model, tmp_path / "synth.safetensors",
                                 trained_on=trained_on_record("sun", {"sun": world / "sun"}))
    real = siam.save_checkpoint(model, tmp_path / "real.safetensors",
                                trained_on=trained_on_record("sun", {"sun": tmp_path / "real" / "sun"}))
    # A checkpoint written before `trained_on` existed: its meta has no such key at all.
    from safetensors.torch import save

    meta = model_meta(model)
    meta.pop("trained_on")
    old = tmp_path / "old.safetensors"
    old.write_bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata={"siam": json.dumps(meta)}))
    return {"world": world, "world_image": world / "son" / "images" / "1.png", "photo": tmp_path / "photos" / "lake.png",
            "synth": synth, "real": real, "old": old}


# --- recording -----------------------------------------------------------------------------------

def test_training_records_the_data_in_every_checkpoint_and_along_the_chain(tmp_path: Path) -> None:
    synth = _mark_synthetic(write_folder(tmp_path / "synth", n_sun=12, n_son=12), seed=3)
    real = write_folder(tmp_path / "real", n_sun=12, n_son=12)
    sun = siam.training.engine.fit(tiny_config(tmp_path / "sun", "sun", data={"root": str(synth), "batch_size": 4},
                                               trainer={"max_steps": 1}))
    rec = read_meta(sun.model_path)["trained_on"]
    assert rec["kind"] == "synthetic" and "siam synth" in rec["summary"] and "seed 3" in rec["summary"]
    assert rec["datasets"] == [{"stage": "sun", "dataset": "sun", "kind": "synthetic", "folder": "synth",
                                "generator": "siam synth", "seed": 3}]
    assert read_meta(sun.last_checkpoint)["trained_on"] == rec  # the Lightning resume file too
    # son-head on the real folder, started from the synthetic sun stage: partly synthetic.
    head = siam.training.engine.fit(tiny_config(tmp_path / "head", "son-head", init_from=str(sun.model_path),
                                                data={"root": str(real), "batch_size": 4}, trainer={"max_steps": 1}))
    rec = siam.load_checkpoint(head.model_path).meta["trained_on"]
    assert rec["kind"] == "mixed"
    assert [(d["stage"], d["dataset"], d["kind"]) for d in rec["datasets"]] == [
        ("sun", "sun", "synthetic"), ("son-head", "son", "real")]
    assert synthetic_note(read_meta(head.model_path)).startswith("Trained partly on synthetic")


def test_dataset_kinds_and_old_checkpoints(worlds: dict[str, Path], tmp_path: Path) -> None:
    assert describe_dataset(worlds["world"] / "son")["kind"] == "synthetic"
    csv = tmp_path / "mine"
    csv.mkdir()
    (csv / "targets.csv").write_text("path,split,score\n")
    assert describe_dataset(csv) == {"kind": "csv", "folder": "mine"}
    assert describe_dataset(tmp_path / "real" / "sun") == {"kind": "real", "folder": "sun"}
    # A checkpoint without `trained_on` loads; its provenance is unknown and gets no note.
    old = siam.load_checkpoint(worlds["old"])
    assert "trained_on" not in old.meta and trained_on(old)["kind"] == "unknown"
    assert synthetic_note(old) is None and explain(old, worlds["photo"]).note is None
    # Re-saving a loaded model keeps what it was trained on.
    again = siam.save_checkpoint(siam.load_checkpoint(worlds["synth"]), tmp_path / "again.safetensors")
    assert read_meta(again)["trained_on"]["kind"] == "synthetic"


def test_the_note_depends_on_the_model_and_on_where_the_image_comes_from(worlds: dict[str, Path]) -> None:
    synth, real = siam.load_checkpoint(worlds["synth"]), siam.load_checkpoint(worlds["real"])
    assert synth_world(worlds["world_image"]) == worlds["world"].absolute()
    assert synth_world(worlds["photo"]) is None
    assert synthetic_note(synth, worlds["world_image"]) is None  # a planted scene: fine
    note = synthetic_note(synth, worlds["photo"])
    assert note is not None and "synthetic planted scenes" in note and "not meaningful" in note
    assert synthetic_note(synth) == note  # unknown origin (an upload): the note too
    assert synthetic_note(real, worlds["photo"]) is None
    # The explanation JSON carries it; the model identity says what it was trained on.
    rec = explain(synth, worlds["photo"]).to_json()
    assert rec["note"] == note and rec["model"]["trained_on"] == "synthetic"
    assert explain(synth, worlds["world_image"]).to_json()["note"] is None
    assert explain(real, worlds["photo"]).to_json()["model"]["trained_on"] == "real"


# --- surfaces ------------------------------------------------------------------------------------

def test_figure_and_html_report_show_the_note(worlds: dict[str, Path], tmp_path: Path) -> None:
    from siam.explain.figures import plot_explanation
    from siam.explain.report import ReportPanel, write_html_report

    synth = siam.load_checkpoint(worlds["synth"])
    expl = explain(synth, worlds["photo"])
    fig = plot_explanation(expl, Image.open(worlds["photo"]))
    assert fig._suptitle is not None and "NOTE: Trained on synthetic" in fig._suptitle.get_text()
    clean = plot_explanation(explain(synth, worlds["world_image"]))
    assert clean._suptitle is None
    page = write_html_report(tmp_path / "r", panels=[ReportPanel(explanation=expl, caption="lake")]).read_text()
    assert "<p class='warning' role='note'>Trained on synthetic planted scenes" in page
    assert json.loads((tmp_path / "r" / "report_data.json").read_text())["warnings"] == [expl.note]
    page = write_html_report(tmp_path / "r2", panels=[
        ReportPanel(explanation=explain(synth, worlds["world_image"]))]).read_text()
    assert "class='warning'" not in page


def test_siam_explain_cli_prints_and_writes_the_note(worlds: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["explain", "--checkpoint", str(worlds["synth"]), str(worlds["photo"]), str(worlds["world_image"]),
                 "--out", str(out), "--no-figure"])
    assert code == 0
    assert "siam explain: note: Trained on synthetic" in capsys.readouterr().err
    assert json.loads((out / "lake.json").read_text())["note"].startswith("Trained on synthetic")
    assert json.loads((out / "1.json").read_text())["note"] is None


def test_web_api_carries_the_note(worlds: dict[str, Path]) -> None:
    from fastapi.testclient import TestClient

    from siam.serve.app import create_app

    with TestClient(create_app(worlds["synth"])) as client:
        model = client.get("/v1/model").json()
        assert model["trained_on"]["kind"] == "synthetic" and model["note"].startswith("Trained on synthetic")
        body = client.post("/v1/explain", files={"image": ("lake.png", worlds["photo"].read_bytes(), "image/png")})
        assert body.status_code == 200 and body.json()["note"] == model["note"]
    with TestClient(create_app(worlds["old"])) as client:
        model = client.get("/v1/model").json()
        assert model["trained_on"]["kind"] == "unknown" and model["note"] is None


def test_siam_score_warns_and_records_the_note(worlds: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "scores"
    assert main(["score", str(worlds["photo"].parent), "--checkpoint", str(worlds["synth"]), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("siam score: WARNING") == 2 and "synthetic planted scenes" in err
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["model_trained_on"]["kind"] == "synthetic" and manifest["note"].startswith("Trained on synthetic")
    assert manifest["complete"] is True
    # Scoring the planted scenes themselves needs no warning.
    out = tmp_path / "scores2"
    assert main(["score", str(worlds["world_image"].parent), "--checkpoint", str(worlds["synth"]), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert json.loads((out / "_manifest.json").read_text())["note"] is None
