from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

import siam
from siam.cli import main
from siam.data.images import load_image
from siam.data.transforms import eval_transform
from siam.scoring import list_inputs, read_manifest, read_scores
from tests.scoring.conftest import ATTRIBUTES, BAD_FILES, make_tiny_siam

EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def _score(*args: str) -> int:
    return main(["score", *args, "--no-progress"])


def _expected_files(root: Path) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, f) for f in files if os.path.splitext(f)[1].lower() in EXTS]
    return found


def _parts(out: Path) -> list[Path]:
    manifest = read_manifest(out)
    return [out / manifest["parts"][k]["file"] for k in sorted(manifest["parts"], key=int)]


def test_directory_gives_one_row_per_input_matching_the_model(siam_ckpt: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _score(str(image_dir), "--checkpoint", str(siam_ckpt), "--out", str(out), "--batch-size", "3",
                  "--workers", "0", "--part-size", "4", "--maps", "npz", "--precision", "fp32") == 0
    files = _parts(out)
    table = pa.concat_tables([pq.read_table(f) for f in files])
    rows = table.to_pydict()
    assert sorted(rows["path"]) == sorted(_expected_files(image_dir))  # recursive, by extension, no notes.txt
    assert len(set(rows["path"])) == len(rows["path"])
    assert table.column_names == ["path", "status", "error", "score", *[f"presence_{a}" for a in ATTRIBUTES],
                                  *[f"contribution_{a}" for a in ATTRIBUTES]]
    bad = {str(image_dir / b) for b in BAD_FILES}
    model = siam.load_checkpoint(siam_ckpt).requires_grad_(False)
    transform = eval_transform(model.preprocessing)
    maps = {p: m for f in sorted(out.glob("_maps/maps-*.npz")) for p, m in zip(np.load(f)["path"], np.load(f)["maps"])}
    for r, path in enumerate(rows["path"]):
        if path in bad:
            assert rows["status"][r] == "error" and rows["score"][r] is None
            assert rows["error"][r].startswith(path + ": ")  # ImageDecodeError: names the file and the reason
            assert np.isnan(maps[path]).all()
            continue
        assert rows["status"][r] == "ok" and rows["error"][r] is None
        with torch.inference_mode():
            ref = model(transform(load_image(path))[None])
        assert rows["score"][r] == pytest.approx(float(ref.score[0]), abs=1e-4)
        contributions = [rows[f"contribution_{a}"][r] for a in ATTRIBUTES]
        np.testing.assert_allclose(contributions, ref.contributions[0].numpy(), atol=1e-5)
        np.testing.assert_allclose([rows[f"presence_{a}"][r] for a in ATTRIBUTES], ref.presence[0].numpy(), atol=1e-5)
        assert rows["score"][r] == pytest.approx(model.template_head.bias.item() + sum(contributions), abs=1e-4)
        np.testing.assert_allclose(maps[path], ref.maps[0].numpy(), atol=1e-5)
    empty = rows["path"].index(str(image_dir / "sub/empty.jpg"))
    assert rows["error"][empty] == f"{image_dir / 'sub/empty.jpg'}: empty file (0 bytes)"
    manifest = json.loads((out / "_manifest.json").read_text())  # rewritten with the listing when complete
    assert manifest["complete"] and manifest["attributes"] == ATTRIBUTES
    assert sum(p["rows"] for p in manifest["parts"].values()) == len(rows["path"])
    assert manifest["error"] == len(BAD_FILES) and manifest["ok"] == len(rows["path"]) - len(BAD_FILES)
    # The one-line read: the manifest, input list and maps folder are skipped by their '_' prefix.
    assert ds.dataset(out).to_table().to_pydict() == rows


def test_list_file_is_relative_to_itself_skips_comments_and_duplicates(siam_ckpt: Path, image_dir: Path,
                                                                      tmp_path: Path) -> None:
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in EXTS)
    listing = image_dir / "list.txt"
    listing.write_text(f"# two photos\n{names[0]}\n\n{image_dir / names[1]}\n{names[0]}\nmissing.jpg\n")
    out = tmp_path / "out"
    assert _score(str(listing), "--checkpoint", str(siam_ckpt), "--out", str(out), "--workers", "1") == 0
    rows = read_scores(out).to_pydict()
    assert rows["path"] == [str(image_dir / names[0]), str(image_dir / names[1]), str(image_dir / "missing.jpg")]
    assert rows["status"] == ["ok", "ok", "error"]
    assert "file not found" in rows["error"][2]


def test_baseline_checkpoint_scores_only(baseline_ckpt: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _score(str(image_dir), "--checkpoint", str(baseline_ckpt), "--out", str(out), "--workers", "0") == 0
    table = read_scores(out)
    assert table.column_names == ["path", "status", "error", "score"]
    model = siam.load_checkpoint(baseline_ckpt)
    rows = table.to_pydict()
    r = rows["status"].index("ok")
    with torch.inference_mode():
        ref = model(eval_transform(model.preprocessing)(load_image(rows["path"][r]))[None]).score
    assert rows["score"][r] == pytest.approx(float(ref[0]), abs=1e-4)


def test_a_training_folder_scores_as_its_model_file(baseline_ckpt: Path, image_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "baseline"
    run.mkdir()
    (run / "model.safetensors").write_bytes(baseline_ckpt.read_bytes())
    a, b = tmp_path / "a", tmp_path / "b"
    assert _score(str(image_dir), "--checkpoint", str(baseline_ckpt), "--out", str(a), "--workers", "0") == 0
    assert _score(str(image_dir), "--checkpoint", str(run), "--out", str(b), "--workers", "0") == 0
    assert read_scores(b).to_pydict() == read_scores(a).to_pydict()
    ma, mb = read_manifest(a), read_manifest(b)
    assert mb["checkpoint_sha256"] == ma["checkpoint_sha256"] and mb["checkpoint"] == str(run / "model.safetensors")


def test_refusals_are_one_line_errors(siam_ckpt: Path, baseline_ckpt: Path, image_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    base = [str(image_dir), "--checkpoint", str(siam_ckpt), "--workers", "0"]
    assert _score(*base, "--out", str(out)) == 0
    capsys.readouterr()
    assert _score(*base, "--out", str(out)) == 2
    assert "already holds a scoring run" in capsys.readouterr().err
    assert _score(str(image_dir), "--checkpoint", str(baseline_ckpt), "--out", str(out), "--resume") == 2
    assert "the checkpoint file differs" in capsys.readouterr().err
    assert _score(*base, "--out", str(out), "--resume") == 0  # complete: nothing to redo
    assert _score(*base, "--out", str(tmp_path / "o2"), "--batch-size", "0") == 2
    assert "--batch-size must be >= 1, got 0" in capsys.readouterr().err
    assert _score(str(tmp_path / "nope"), "--checkpoint", str(siam_ckpt), "--out", str(tmp_path / "o3")) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert _score(*base, "--out", str(tmp_path / "full")) == 2
    assert "is not empty" in capsys.readouterr().err


def test_resume_rewrites_a_part_killed_before_its_rename(siam_ckpt: Path, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [str(image_dir), "--checkpoint", str(siam_ckpt), "--out", str(out), "--workers", "0", "--part-size", "5"]
    assert _score(*args) == 0
    before = read_scores(out)
    parts = sorted(out.glob("part-*.parquet"))
    last_rows = pq.read_metadata(parts[-1]).num_rows
    parts[-1].unlink()  # killed before the rename: the part is not committed ...
    (out / ".part-00000.parquet.host-1.tmp").write_bytes(b"half-written")  # ... and while writing another
    with pytest.raises(Exception, match="unfinished"):
        read_scores(out)
    assert not read_manifest(out)["complete"] and len(read_manifest(out)["parts"]) == len(parts) - 1
    assert ds.dataset(out).count_rows() == before.num_rows - last_rows  # the temporary file is skipped
    assert _score(*args, "--resume") == 0
    after, want = read_scores(out).to_pydict(), before.to_pydict()
    for column in ("path", "status", "error"):
        assert after[column] == want[column]
    for column in set(want) - {"path", "status", "error"}:  # recomputed in other batches: float rounding
        np.testing.assert_allclose(np.array(after[column], float), np.array(want[column], float), rtol=1e-5, atol=1e-6)
    assert not list(out.glob(".*.tmp"))


def test_kill_9_mid_run_then_resume_has_no_duplicate_and_no_missing_row(image_dir: Path, tmp_path: Path) -> None:
    # A slower model (256 px) so that the run is still going when the first part lands.
    ckpt = siam.save_checkpoint(make_tiny_siam(crop=256), tmp_path / "slow.safetensors")
    inputs = sorted(p for p in _expected_files(image_dir))
    listing = tmp_path / "inputs.txt"
    copies = tmp_path / "copies"
    copies.mkdir()
    lines = []
    for k in range(3):  # 3 copies of every input (bad files included) under distinct names
        for p in inputs:
            dest = copies / f"{k}_{Path(p).name}"
            dest.write_bytes(Path(p).read_bytes())
            lines.append(str(dest))
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "siam.cli", "score", str(listing), "--checkpoint", str(ckpt), "--out", str(out),
           "--batch-size", "2", "--part-size", "4", "--workers", "1", "--no-progress", "--precision", "fp32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(out.glob("part-*.parquet")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err.decode()[-500:]}"
    killed = read_manifest(out)
    assert 1 <= len(killed["parts"]) < killed["num_parts"] and not killed["complete"]
    assert main(["score", str(listing), "--checkpoint", str(ckpt), "--out", str(out), "--resume", "--batch-size", "4",
                 "--part-size", "4", "--workers", "0", "--no-progress", "--precision", "fp32"]) == 0
    files = _parts(out)
    assert len(files) == killed["num_parts"] and not list(out.glob(".*.tmp"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    paths = table.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == len(lines)  # no duplicate ...
    assert set(paths) == set(lines)  # ... and no missing row
    status = dict(zip(paths, table.column("status").to_pylist()))
    assert sum(s == "error" for s in status.values()) == 3 * len(BAD_FILES)
    bad_names = {Path(b).name for b in BAD_FILES}
    assert all(status[p] == "error" for p in lines if Path(p).name.split("_", 1)[1] in bad_names)


def test_list_inputs_validates(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found under"):
        list_inputs(tmp_path / "empty")
    (tmp_path / "bin.lst").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="UTF-8 text file listing image paths"):
        list_inputs(tmp_path / "bin.lst")
    (tmp_path / "blank.txt").write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="names no image paths"):
        list_inputs(tmp_path / "blank.txt")


def test_a_run_killed_before_its_first_manifest_can_start_again(siam_ckpt: Path, image_dir: Path,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "_inputs.txt").write_text("half a list")
    (out / "._manifest.json.host-7.tmp").write_text("{")
    assert _score(str(image_dir), "--checkpoint", str(siam_ckpt), "--out", str(out), "--workers", "0") == 0
    assert read_scores(out).num_rows == len(_expected_files(image_dir))
    assert not list(out.glob(".*.tmp"))


def test_progress_in_a_log_is_plain_lines(siam_ckpt: Path, image_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Without --no-progress and with output that is not a terminal: a plain line, no ``\\r``."""
    out = tmp_path / "out"
    assert main(["score", str(image_dir), "--checkpoint", str(siam_ckpt), "--out", str(out), "--workers", "0",
                 "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    n = len(_expected_files(image_dir))
    assert "\r" not in err
    assert f"siam score: {n}/{n} img (100%)" in err
