from __future__ import annotations

import json

import pytest
import torch

import siam
from siam.errors import CheckpointError


def test_roundtrip_keeps_weights_names_preprocessing(tmp_path) -> None:
    torch.manual_seed(0)
    model = siam.build_model(backbone="tiny", attributes=["water", "road", "trees"], grid=8, border=1, bias=4.0)
    with torch.no_grad():
        model.template_head.templates.uniform_(0, 1)
    path = siam.save_checkpoint(model, tmp_path / "m.safetensors", metrics={"rmse": 1.0})
    loaded = siam.load_checkpoint(path)
    assert loaded.attributes == ("water", "road", "trees")
    assert loaded.preprocessing == model.preprocessing
    assert loaded.config == model.config
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(loaded(x).score, model(x).score)
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["attributes"] == ["water", "road", "trees"]
    assert meta["metrics"] == {"rmse": 1.0}


def test_baseline_roundtrip(tmp_path) -> None:
    model = siam.build_baseline(backbone="tiny", bias=2.0).eval()
    path = siam.save_checkpoint(model, tmp_path / "b.safetensors")
    loaded = siam.load_checkpoint(path)
    assert isinstance(loaded, siam.Baseline)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x).score, model(x).score)


def test_vocabulary_mismatch_is_a_clear_error(tmp_path) -> None:
    model = siam.build_model(backbone="tiny", attributes=["water", "road"], grid=4, border=0)
    path = siam.save_checkpoint(model, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"vocabulary mismatch.*K=2.*K=3"):
        siam.load_checkpoint(path, attributes=["water", "road", "ocean"])


def test_bad_checkpoint_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        siam.load_checkpoint(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        siam.load_checkpoint(bad)
    other = tmp_path / "x.pkl"
    other.write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match=r"unsupported checkpoint.*allowed"):
        siam.load_checkpoint(other)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no 'siam' metadata"):
        siam.load_checkpoint(tmp_path / "plain.safetensors")


def test_pickled_code_is_never_executed(tmp_path) -> None:
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"siam_meta": Evil()}, fh)
    with pytest.raises(CheckpointError):
        siam.load_checkpoint(path)
    assert not marker.exists()


def test_a_training_output_folder_loads_as_its_model_file(tmp_path) -> None:
    model = siam.build_model(backbone="tiny", attributes=["water", "road"], grid=4, border=0).eval()
    run = tmp_path / "runs" / "joint"
    siam.save_checkpoint(model, run / "model.safetensors")
    from siam.checkpoint import checkpoint_file, read_meta

    assert checkpoint_file(run) == run / "model.safetensors"
    assert checkpoint_file(tmp_path / "other.ckpt") == tmp_path / "other.ckpt"  # files pass through
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(siam.load_checkpoint(run)(x).score, model(x).score)
    assert read_meta(run)["model"]["attributes"] == ["water", "road"]


def test_a_folder_without_a_model_file_says_what_it_holds(tmp_path) -> None:
    run = tmp_path / "killed"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"is a folder without model\.safetensors; allowed: a model file"):
        siam.load_checkpoint(run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"Lightning resume files \['checkpoints/last\.ckpt'\]"):
        siam.load_checkpoint(run)
