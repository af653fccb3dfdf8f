"""Training from folders in the real formats: a corrupt image is logged and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siam.errors import DatasetError
from siam.training.engine import fit

from .helpers import NAMES, tiny_config, write_folder


@pytest.mark.parametrize("cache", [False, True])
def test_corrupt_image_is_reported_and_training_goes_on(tmp_path: Path, cache: bool) -> None:
    data = write_folder(tmp_path / "data", n_sun=12, n_son=40)
    bad = data / "son" / "images" / "1000.jpg"  # the first ID: in the train split
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    cfg = tiny_config(tmp_path / "run", "baseline", data={"root": str(data), "cache": cache, "batch_size": 10,
                                                          "max_bad_fraction": 0.1})
    res = fit(cfg)
    assert res.global_step > 0 and res.model_path.is_file()
    entries = [json.loads(line) for line in (tmp_path / "run" / "bad_images.jsonl").read_text().splitlines()]
    assert [Path(e["path"]).name for e in entries] == ["1000.jpg"] and "truncated" in entries[0]["error"]
    # The SoN mean score initialised the bias; the SUN vocabulary named the model's attributes.
    assert (tmp_path / "run" / "logs").is_dir() and list((tmp_path / "run" / "tensorboard").rglob("events.*"))
    sun = fit(tiny_config(tmp_path / "sun", "sun", data={"root": str(data), "batch_size": 4},
                          trainer={"max_steps": 1}))
    assert sun.model.attributes == NAMES


def test_too_many_bad_images_fail_with_a_clear_error(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=12, n_son=40)
    for pid in range(1000, 1006):
        (data / "son" / "images" / f"{pid}.jpg").write_bytes(b"not a jpeg")
    cfg = tiny_config(tmp_path / "run", "baseline", data={"root": str(data), "cache": True, "max_bad_fraction": 0.05})
    with pytest.raises(DatasetError, match="failed to decode"):
        fit(cfg)
