from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from siam.data.images import load_image
from siam.data.son_attributes import SonAttributeSet, read_son_attributes
from siam.data.transforms import Preprocessing, eval_transform
from siam.errors import DatasetError
from tests.data._fakes import SMALL, write_images

TF = eval_transform(Preprocessing(**SMALL))
NAMES = ["trees", "still water", "Ice/snow"]


def _write(root: Path, n: int = 6, *, images: bool = True) -> tuple[list[str], np.ndarray]:
    ids = [str(5000 + 11 * i) for i in range(n)]
    labels = np.random.default_rng(0).integers(0, 5, size=(n, len(NAMES))) / 4.0  # 4 annotators
    lines = ["id," + ",".join(NAMES)] + [
        ",".join([pid] + [f"{v:g}" for v in row]) for pid, row in zip(ids, labels)
    ]
    (root / "son_attributes.csv").write_text("\n".join(lines) + "\n")
    if images:
        write_images(root / "images", [f"{'x/' if k % 2 else ''}{pid}.jpg" for k, pid in enumerate(ids)])
    return ids, labels


def test_reads_labels_and_images(tmp_path: Path) -> None:
    ids, labels = _write(tmp_path)
    ds = SonAttributeSet(tmp_path / "son_attributes.csv", tmp_path / "images", transform=TF)
    assert len(ds) == 6 and ds.ids == ids and ds.attributes == tuple(NAMES)
    for i in range(len(ds)):
        s = ds[i]
        assert s.source == "son_attributes" and s.score is None and s.variance is None
        torch.testing.assert_close(s.attributes, torch.tensor(labels[i], dtype=torch.float32))
    img = next((tmp_path / "images" / "x").glob("*.jpg"))
    k = ds.ids.index(img.stem)
    torch.testing.assert_close(ds[k].image, TF(load_image(img)), atol=0, rtol=0)


def test_selects_and_orders_attributes(tmp_path: Path) -> None:
    _, labels = _write(tmp_path, images=False)
    table = read_son_attributes(tmp_path / "son_attributes.csv", attributes=["ice_snow", "trees"])
    assert table.names == ("ice_snow", "trees")
    np.testing.assert_array_equal(table.labels, labels[:, [2, 0]].astype(np.float32))
    with pytest.raises(DatasetError, match="'ocean' matches no column"):
        read_son_attributes(tmp_path / "son_attributes.csv", attributes=["ocean"])


def test_every_image_must_exist_by_default(tmp_path: Path) -> None:
    ids, _ = _write(tmp_path)
    next((tmp_path / "images").rglob(f"{ids[3]}.jpg")).unlink()
    with pytest.raises(DatasetError, match=rf"1 of 6 images are missing .*\['{ids[3]}'\]"):
        SonAttributeSet(tmp_path / "son_attributes.csv", tmp_path / "images", transform=TF)
    with pytest.warns(UserWarning, match="1 of 6 images are missing"):
        ds = SonAttributeSet(tmp_path / "son_attributes.csv", tmp_path / "images", transform=TF,
                             max_missing_fraction=0.2)
    assert len(ds) == 5 and ds.missing == [ids[3]] and ds.labels.shape == (5, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("image,trees\n1,0.5\n", "expected a header 'id,<attribute>"),
        ("id\n1\n", "expected a header"),
        ("", "expected a header"),
        ("id,trees\n1,1.5\n", r"line 2, column 'trees': '1.5' is not a fraction"),
        ("id,trees\n1,yes\n", "'yes' is not a fraction"),
        ("id,trees\n1,0.5,1\n", "line 2: 3 fields, the header has 2"),
        ("id,trees\n1,0.5\n1,0.25\n", r"repeated or empty: \['1'\]"),
    ],
)
def test_malformed_csv(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=expected):
        read_son_attributes(path)
