"""Small learnable data for training tests: in-memory samples and a folder in the real formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from siam.data.samples import Sample
from siam.training.config import TrainConfig, config_from_dict

NAMES = ("red", "green", "blue")
SIZE = 32


def _image(rng: np.random.Generator, presence: np.ndarray) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8: attribute k paints a patch of colour k."""
    img = rng.integers(0, 60, size=(SIZE, SIZE, 3), dtype=np.uint8)
    for k, p in enumerate(presence):
        if p >= 0.5:
            y, x = rng.integers(0, SIZE // 2, size=2)
            img[y : y + SIZE // 2, x : x + SIZE // 2, k] = 230
    return img


def make_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """images (n, S, S, 3) uint8, labels (n, K) in {0, 1/3, 2/3, 1}, scores (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(n, len(NAMES))) / 3.0
    images = np.stack([_image(rng, lab) for lab in labels])
    scores = 5.0 + 2.0 * (labels[:, 1] >= 0.5) - 1.5 * (labels[:, 0] >= 0.5) + rng.normal(0, 0.1, n)
    return images, labels.astype(np.float32), scores.astype(np.float32)


def samples(kind: str, n: int, seed: int = 0) -> list[Sample]:
    images, labels, scores = make_arrays(n, seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5  # (n, 3, S, S)
    if kind == "sun":
        return [Sample(image=x[i], id=f"sun{seed}_{i}", source="sun", attributes=torch.from_numpy(labels[i]))
                for i in range(n)]
    return [Sample(image=x[i], id=f"son{seed}_{i}", source="son", score=float(scores[i])) for i in range(n)]


def tiny_config(out: Path, stage: str, **sections: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "stage": stage,
        "out": str(out),
        "model": {"backbone": "tiny", "grid": 4, "border": 0},
        "preprocessing": {"resize": SIZE, "crop": SIZE, "max_rotation": 0.0},
        "data": {"batch_size": 8, "num_workers": 0},
        "optim": {"lr_decay_every": 0},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                    "checkpoint_every_n_steps": 2, "log_every_n_steps": 1, "val_every_n_epochs": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    return config_from_dict(base)


def write_folder(root: Path, *, n_sun: int = 48, n_son: int = 48, seed: int = 0) -> Path:
    """A data folder in the 'siam synth' layout: sun/ (SUN .mat files) and son/ (votes.tsv)."""
    import scipy.io
    from PIL import Image

    images, labels, _ = make_arrays(n_sun, seed)
    sun = root / "sun"
    (sun / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images):
        name = f"s/{i:04d}.jpg"
        (sun / "images" / "s").mkdir(exist_ok=True)
        Image.fromarray(img).save(sun / "images" / name, quality=95)
        names.append(name)
    scipy.io.savemat(sun / "images.mat", {"images": np.array(names, dtype=object).reshape(-1, 1)})
    scipy.io.savemat(sun / "attributes.mat", {"attributes": np.array(NAMES, dtype=object).reshape(-1, 1)})
    scipy.io.savemat(sun / "attributeLabels_continuous.mat", {"labels_cv": labels.astype(np.float64)})
    images, _, scores = make_arrays(n_son, seed + 1)
    son = root / "son"
    (son / "images").mkdir(parents=True, exist_ok=True)
    lines = ["ID\tLat\tLon\tAverage\tVariance\tVotes\tGeograph URI"]
    for i, (img, s) in enumerate(zip(images, scores)):
        pid = 1000 + i
        Image.fromarray(img).save(son / "images" / f"{pid}.jpg", quality=95)
        lines.append(f"{pid}\t51.0\t-1.0\t{s:.4f}\t1.0\t5,5,5\thttp://www.geograph.org.uk/photo/{pid}")
    (son / "votes.tsv").write_text("\n".join(lines) + "\n")
    return root
