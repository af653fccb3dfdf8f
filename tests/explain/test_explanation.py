from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import siam
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import ImageDecodeError
from siam.explain import Explanation, error_record, explain, explain_baseline, load_explanation, model_identity
from siam.explain.explanation import JSON_KEYS, crop_box, region_weights

from .conftest import NAMES, make_image


def _hand(contributions, presence=None) -> Explanation:
    c = np.asarray(contributions, dtype=np.float32)
    k = len(c)
    cm = np.zeros((k, 2, 2), np.float32)
    cm[:, 0, 0] = c
    return Explanation(
        image="x.jpg", image_size=(20, 10), score=float(1.0 + c.sum()), bias=1.0,
        attributes=tuple(f"a{i}" for i in range(k)),
        presence=np.asarray(presence if presence is not None else np.linspace(0, 1, k), np.float32),
        contributions=c, maps=np.abs(cm), contribution_maps=cm, model_id={}, preprocessing={},
        crop_box=(0.0, 0.0, 20.0, 10.0),
    )


def test_explanation_is_the_model_forward_pass(model, image) -> None:
    expl = explain(model, image, name="img")
    with torch.no_grad():
        out = model(eval_transform(model.preprocessing)(image)[None])
    np.testing.assert_array_equal(expl.presence, out.presence[0].numpy())
    np.testing.assert_array_equal(expl.contributions, out.contributions[0].numpy())
    np.testing.assert_array_equal(expl.maps, out.maps[0].numpy())
    np.testing.assert_array_equal(expl.contribution_maps, out.contribution_maps[0].numpy())
    assert expl.score == float(out.score[0])
    assert expl.bias == 5.0
    assert expl.attributes == NAMES
    assert expl.image_size == image.size
    # the hand-set model gives contributions of both signs
    assert (expl.contributions > 0).any() and (expl.contributions < 0).any()


def test_json_identity_and_stable_keys(model, image) -> None:
    expl = explain(model, image, top_k=2)
    record = json.loads(json.dumps(expl.to_json(maps_path="m.npz")))  # plain JSON types only
    assert tuple(record) == JSON_KEYS
    total = record["bias"] + sum(a["contribution"] for a in record["attributes"])
    assert record["score"] == pytest.approx(total, abs=1e-5)
    assert [a["name"] for a in record["attributes"]] == list(NAMES)
    assert record["maps"] == "m.npz" and record["error"] is None
    assert record["model"]["backbone"] == "tiny" and record["preprocessing"]["crop"] == 64
    # contribution maps sum to the contributions and the total map to score - bias
    np.testing.assert_allclose(expl.contribution_maps.sum((1, 2)), expl.contributions, atol=1e-5)
    assert float(expl.total_map().sum()) == pytest.approx(expl.score - expl.bias, abs=1e-5)
    assert len(record["top_positive"]) <= 2 and len(record["top_negative"]) <= 2
    assert all(e["contribution"] > 0 for e in record["top_positive"])
    assert all(e["contribution"] < 0 for e in record["top_negative"])


def test_ranks_and_top_lists_hand_set() -> None:
    e = _hand([0.5, -2.0, 0.0, 1.0, -0.25])
    np.testing.assert_array_equal(e.ranks(), [3, 1, 5, 2, 4])
    assert [d["name"] for d in e.top_positive(5)] == ["a3", "a0"]
    assert [d["name"] for d in e.top_negative(5)] == ["a1", "a4"]
    assert e.top_positive(1) == [{"name": "a3", "contribution": 1.0, "presence": 0.75}]
    assert e.top_negative(0) == []
    # ties keep attribute order
    np.testing.assert_array_equal(_hand([1.0, -1.0, 1.0]).ranks(), [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative integer"):
        e.top_positive(-1)


def test_input_kinds_agree(model, image, tmp_path) -> None:
    path = tmp_path / "im.png"
    image.save(path)
    ref = explain(model, image)
    by_path = explain(model, path)
    by_bytes = explain(model, path.read_bytes(), name="upload.png")
    x = eval_transform(model.preprocessing)(image)
    by_tensor = explain(model, x)
    for e in (by_path, by_bytes, by_tensor):
        np.testing.assert_array_equal(e.contributions, ref.contributions)
    assert by_path.image == str(path) and by_bytes.image == "upload.png" and by_tensor.image is None
    assert by_tensor.image_size == (64, 64) and by_tensor.crop_box == (0.0, 0.0, 64.0, 64.0)


def test_bad_inputs(model, baseline, tmp_path) -> None:
    with pytest.raises(ImageDecodeError, match="upload.jpg"):
        explain(model, b"not an image", name="upload.jpg")
    with pytest.raises(ImageDecodeError, match="not found"):
        explain(model, tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="PIL image, a path, bytes or a float tensor"):
        explain(model, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        explain(model, torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="needs a SIAM model"):
        explain(baseline, make_image(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative integer"):
        explain(model, make_image(1), top_k=-1)
    big = io.BytesIO()
    make_image(2, (300, 300)).save(big, format="PNG")
    with pytest.raises(ImageDecodeError, match="megapixels"):
        explain(model, big.getvalue(), max_megapixels=0.05)


def test_training_mode_is_restored(image) -> None:
    from .conftest import make_siam

    m = make_siam().train()
    a = explain(m, image)
    assert m.training  # restored
    b = explain(m.eval(), image)
    np.testing.assert_array_equal(a.contributions, b.contributions)  # explain always used eval mode


def test_crop_box_matches_eval_transform() -> None:
    """A horizontal (red) and vertical (green) ramp: the first/last column and row of the model
    input must show the ramp values at the crop box edges."""
    w, h = 300, 180
    pre = Preprocessing(resize=90, crop=61, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    xs = (np.arange(w) + 0.5) / w
    ys = (np.arange(h) + 0.5) / h
    arr = np.zeros((h, w, 3), np.float64)
    arr[..., 0] = xs[None, :]
    arr[..., 1] = ys[:, None]
    img = Image.fromarray(np.round(arr * 255).astype(np.uint8))
    x = eval_transform(pre)(img)  # (3, 61, 61) in [0, 1]
    x0, y0, x1, y1 = crop_box(w, h, pre)
    px, py = w / pre.resize, h / pre.resize  # one resized pixel in original pixels
    assert float(x[0, :, 0].mean()) == pytest.approx((x0 + px / 2) / w, abs=0.01)
    assert float(x[0, :, -1].mean()) == pytest.approx((x1 - px / 2) / w, abs=0.01)
    assert float(x[1, 0, :].mean()) == pytest.approx((y0 + py / 2) / h, abs=0.01)
    assert float(x[1, -1, :].mean()) == pytest.approx((y1 - py / 2) / h, abs=0.01)


def test_region_weights_hand_computed() -> None:
    w = region_weights((0.0, 0.0, 8.0, 8.0), 4, (1.0, 0.0, 3.0, 2.0))
    expected = np.zeros((4, 4))
    expected[0, 0] = expected[0, 1] = 0.5
    np.testing.assert_allclose(w, expected)
    # a shifted crop box and a region covering it all
    full = region_weights((10.0, 20.0, 30.0, 60.0), 5, (0.0, 0.0, 100.0, 100.0))
    np.testing.assert_allclose(full, np.ones((5, 5)))
    # a quarter of one cell (cells are 4 x 8 here)
    q = region_weights((10.0, 20.0, 30.0, 60.0), 5, (10.0, 20.0, 12.0, 24.0))
    assert q[0, 0] == pytest.approx(0.25) and q.sum() == pytest.approx(0.25)


def test_npz_roundtrip_and_load(model, image, tmp_path) -> None:
    expl = explain(model, image, name="pic.png", top_k=3)
    npz = expl.save_npz(tmp_path / "e.npz", extra={"baseline_cam": np.ones((2, 2))})
    with np.load(npz, allow_pickle=False) as z:
        assert list(z["attributes"]) == list(NAMES)
        np.testing.assert_array_equal(z["maps"], expl.maps)
        np.testing.assert_array_equal(z["contribution_maps"], expl.contribution_maps)
        np.testing.assert_array_equal(z["total_map"], expl.total_map())
        assert float(z["score"]) == expl.score and float(z["bias"]) == expl.bias
        assert z["baseline_cam"].shape == (2, 2)
    (tmp_path / "e.json").write_text(json.dumps(expl.to_json(maps_path=str(npz))))
    back = load_explanation(tmp_path / "e.json")
    np.testing.assert_array_equal(back.contribution_maps, expl.contribution_maps)
    assert back.to_json(maps_path=str(npz)) == expl.to_json(maps_path=str(npz))
    with pytest.raises(ValueError, match="may not replace"):
        expl.save_npz(tmp_path / "x.npz", extra={"maps": np.zeros(1)})


def test_error_record_has_the_same_keys(model) -> None:
    rec = json.loads(json.dumps(error_record("bad.jpg", ValueError("bad.jpg: corrupt"), model=model)))
    assert tuple(rec) == JSON_KEYS
    assert rec["error"] == "bad.jpg: corrupt" and rec["image"] == "bad.jpg"
    assert rec["score"] is None and rec["bias"] is None and rec["maps"] is None
    assert [a["name"] for a in rec["attributes"]] == list(NAMES)
    assert all(a["contribution"] is None and a["presence"] is None for a in rec["attributes"])
    assert tuple(error_record(None, "x")) == JSON_KEYS


def test_model_identity_hashes_the_checkpoint(checkpoints, tmp_path) -> None:
    import hashlib

    m = siam.load_checkpoint(checkpoints["siam"])
    ident = model_identity(m, checkpoint=checkpoints["siam"])
    assert ident["checkpoint_sha256"] == hashlib.sha256(checkpoints["siam"].read_bytes()).hexdigest()
    assert ident["kind"] == "siam" and ident["num_attributes"] == len(NAMES)
    # a 'siam train --out' folder stands for its model file, hash included
    run = tmp_path / "joint"
    run.mkdir()
    (run / "model.safetensors").write_bytes(checkpoints["siam"].read_bytes())
    assert model_identity(m, checkpoint=run)["checkpoint_sha256"] == ident["checkpoint_sha256"]
    expl = explain(m, make_image(3), model_id=ident)
    assert expl.to_json()["model"] == ident


def test_baseline_result(baseline, image) -> None:
    res = explain_baseline(baseline, image)
    with torch.no_grad():
        out = baseline(eval_transform(baseline.preprocessing)(image)[None])
    assert res.score == float(out.score[0])
    assert res.score == pytest.approx(float(res.cam.mean()), abs=1e-5)
    assert res.bias == 5.0 and res.cam.shape == (8, 8)


def test_siam_explain_is_callable_after_the_package_is_imported(model, image) -> None:
    import siam.explain.summary  # noqa: F401  (binds the name siam.explain to the package)

    assert siam.explain(model, image).score == explain(model, image).score
