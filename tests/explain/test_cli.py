"""``siam explain`` end to end: good and bad files, interventions, baseline, real photographs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siam
from siam.cli import main
from siam.explain import explain, explain_baseline
from siam.explain.explanation import JSON_KEYS

from .conftest import make_image


def _good_and_bad(tmp_path: Path) -> tuple[list[str], list[str]]:
    d = tmp_path / "in"
    d.mkdir()
    good = []
    for i, (name, size) in enumerate([("a.jpg", (120, 90)), ("b.png", (64, 100)), ("c.webp", (80, 80))]):
        make_image(i, size).save(d / name)
        good.append(str(d / name))
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("hello, I am text\n")
    jpeg = (d / "a.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "nothing_here").mkdir()
    bad = [str(d / "empty.jpg"), str(d / "notes.jpg"), str(d / "truncated.jpg"), str(tmp_path / "missing.png"),
           str(tmp_path / "nothing_here")]
    return good, bad


def test_mixed_good_and_bad_files(tmp_path, checkpoints, capsys) -> None:
    good, bad = _good_and_bad(tmp_path)
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), *good, *bad, "--out", str(out), "--no-figure",
               "--top-k", "2"])
    assert rc == 1
    err = capsys.readouterr().err
    error_lines = [ln for ln in err.splitlines() if ln.startswith("siam explain: error:")]
    assert len(error_lines) == len(bad)
    for path, line in zip(bad, error_lines):
        assert path in line
        rec = json.loads((out / f"{Path(path).stem}.json").read_text())
        assert tuple(k for k in rec if k in JSON_KEYS) == JSON_KEYS
        assert rec["error"] and path in rec["error"] and rec["score"] is None and rec["maps"] is None
        assert not (out / f"{Path(path).stem}.npz").exists()
    assert "empty" in error_lines[0] and "text" in error_lines[1] and "truncated" in error_lines[2]
    assert "not found" in error_lines[3] and "no image files" in error_lines[4]
    model = siam.load_checkpoint(checkpoints["siam"])
    for path in good:
        rec = json.loads((out / f"{Path(path).stem}.json").read_text())
        ref = explain(model, path)
        assert rec["error"] is None and rec["image"] == path
        assert rec["score"] == ref.score and rec["image_size"] == list(Image.open(path).size)
        assert [a["contribution"] for a in rec["attributes"]] == pytest.approx(ref.contributions.tolist())
        assert rec["score"] == pytest.approx(rec["bias"] + sum(a["contribution"] for a in rec["attributes"]), abs=1e-5)
        assert len(rec["top_positive"]) <= 2
        assert rec["model"]["checkpoint_sha256"] and rec["preprocessing"]["resize"] == 72
        with np.load(rec["maps"], allow_pickle=False) as z:
            np.testing.assert_array_equal(z["contribution_maps"], ref.contribution_maps)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_inputs"] == len(good) + len(bad) and summary["n_failed"] == len(bad)


def test_all_good_exits_zero_with_baseline(tmp_path, checkpoints, capsys) -> None:
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    make_image(1, (100, 70)).save(d / "x.png")
    make_image(2, (70, 100)).save(d / "sub" / "x.jpg")  # same stem, other folder
    (d / "readme.txt").write_text("not an image: skipped when a folder is expanded")
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), str(d), "--out", str(out),
               "--baseline", str(checkpoints["baseline"]), "--no-figure"])
    assert rc == 0, capsys.readouterr().err
    # folders are expanded in sorted order: sub/x.jpg comes first and gets the plain stem
    assert sorted(p.name for p in out.glob("*.json")) == ["summary.json", "x.json", "x_png.json"]
    assert json.loads((out / "x_png.json").read_text())["image"] == str(d / "x.png")
    rec = json.loads((out / "x.json").read_text())
    assert rec["image"] == str(d / "sub" / "x.jpg")
    base = explain_baseline(siam.load_checkpoint(checkpoints["baseline"]), d / "sub" / "x.jpg")
    assert rec["baseline"]["score"] == base.score
    with np.load(out / "x.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["baseline_cam"], base.cam)
    assert not list(out.glob("*.png"))  # --no-figure


def test_interventions_on_the_command_line(tmp_path, checkpoints, capsys) -> None:
    img = tmp_path / "scene.png"
    make_image(5, (120, 100)).save(img)
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), str(img), "--out", str(out), "--no-figure",
               "--remove", "road", "--scale", "ocean=0.5", "--remove-region", "clouds:0,0,60,50.5",
               "--restrict-top-k", "3"])
    assert rc == 0
    stdout = capsys.readouterr().out
    rec = json.loads((out / "scene.json").read_text())
    ref = explain(siam.load_checkpoint(checkpoints["siam"]), img).intervene(
        remove=["road"], scale={"ocean": 0.5}, remove_region={"clouds": (0, 0, 60, 50.5)}, top_k=3)
    assert rec["intervention"] == json.loads(json.dumps(ref.to_json()))
    assert rec["intervention"]["score"] == pytest.approx(
        rec["bias"] + sum(a["contribution"] for a in rec["intervention"]["contributions"]), abs=1e-5)
    assert f"score {ref.original_score:.3f} -> {ref.score:.3f}" in stdout


def test_region_outside_one_image(tmp_path, checkpoints, capsys) -> None:
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    make_image(1, (200, 200)).save(big)
    make_image(2, (50, 50)).save(small)
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), str(big), str(small), "--out", str(out),
               "--no-figure", "--remove-region", "trees:100,100,150,150"])
    assert rc == 1
    assert "outside the 50x50 image" in capsys.readouterr().err
    rec = json.loads((out / "small.json").read_text())
    assert rec["error"] is None and rec["score"] is not None  # the explanation stands
    assert "outside" in rec["intervention"]["error"]
    assert "score" in json.loads((out / "big.json").read_text())["intervention"]


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--remove", "sky"], "--remove: unknown attribute 'sky'; allowed: ['trees'"),
        (["--scale", "ocean"], "--scale: expected NAME=FACTOR"),
        (["--scale", "ocean=lots"], "--scale: expected NAME=FACTOR"),
        (["--scale", "ocean=2", "--scale", "ocean=3"], "given twice"),
        (["--remove-region", "clouds:1,2,3"], "--remove-region: expected NAME:x0,y0,x1,y1"),
        (["--remove-region", "clouds:5,5,1,1"], "x0 < x1"),
        (["--restrict-top-k", "-1"], "--restrict-top-k: must be >= 0"),
        (["--top-k", "-2"], "--top-k: must be >= 0"),
    ],
)
def test_bad_flags(tmp_path, checkpoints, capsys, flags, match) -> None:
    img = tmp_path / "i.png"
    make_image(0).save(img)
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), str(img), "--out", str(out), *flags])
    assert rc == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_wrong_model_kinds(tmp_path, checkpoints, capsys) -> None:
    img = tmp_path / "i.png"
    make_image(0).save(img)
    rc = main(["explain", "--checkpoint", str(checkpoints["baseline"]), str(img), "--out", str(tmp_path / "o")])
    assert rc == 2 and "must be a SIAM model" in capsys.readouterr().err
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), "--baseline", str(checkpoints["siam"]), str(img),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "not a baseline" in capsys.readouterr().err
    rc = main(["explain", "--checkpoint", str(tmp_path / "nope.safetensors"), str(img), "--out", str(tmp_path / "o")])
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err


def test_real_photographs(photos_dir, tmp_path, checkpoints, capsys) -> None:
    """Every real photo gets a JSON; the 5120x2880 RGBA PNG and the portrait PNG also get their
    figure, next to a broken file that fails alone (copied to tmp: never write into the shared folder)."""
    if not photos_dir.is_dir():
        pytest.skip(f"no photos at {photos_dir}")
    photos = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    big = photos_dir / "icecold_5120x2880.png"
    portrait = photos_dir / "altai_portrait.png"
    assert big in photos and portrait in photos and len(photos) >= 10
    out = tmp_path / "out"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), str(photos_dir), "--out", str(out), "--no-figure"])
    assert rc == 0, capsys.readouterr().err
    assert len(list(out.glob("*.json"))) == len(photos) + 1  # + summary.json; LICENSES.md is not an image
    for p in photos:
        rec = json.loads((out / f"{p.stem}.json").read_text())
        assert rec["error"] is None and rec["image_size"] == list(Image.open(p).size)
        assert rec["score"] == pytest.approx(rec["bias"] + sum(a["contribution"] for a in rec["attributes"]), abs=1e-5)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(portrait, mixed)
    (mixed / "broken.png").write_bytes(portrait.read_bytes()[:5000])
    out2 = tmp_path / "out2"
    rc = main(["explain", "--checkpoint", str(checkpoints["siam"]), str(mixed), str(big), "--out", str(out2)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "altai_portrait" not in err.split("error:")[-1]
    for stem, size in (("altai_portrait", (1080, 1920)), ("icecold_5120x2880", (5120, 2880))):
        rec = json.loads((out2 / f"{stem}.json").read_text())
        assert rec["error"] is None and rec["image_size"] == list(size)
        assert Image.open(out2 / f"{stem}.png").format == "PNG"
    assert "broken.png" in json.loads((out2 / "broken.json").read_text())["error"]
    assert not (out2 / "broken.png").exists()
