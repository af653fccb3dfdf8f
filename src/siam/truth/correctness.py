"""Correctness in the FunnyBirds sense (Hesse, Schaub-Meyer & Roth, ICCV 2023).

For each test scene, the generator re-renders it exactly from its seed, once as it was and once
without each attribute it shows (:func:`siam.synth.render_scene`); every image goes through
the same JPEG encoding as the written files (:func:`~siam.synth.encode_as_written`) and the
evaluation transform. The *true effect* of attribute i on a model is the change of that model's
score when i is removed: ``score(scene) - score(scene without i)``. An explanation is correct to the
degree that its attribution ranks the attributes of an image like their true effects: per image,
the Spearman rank correlation rho across its present attributes, reported as 0.5 rho + 0.5
(:func:`siam.evaluation.planted.correctness`; images with < 2 present attributes are NaN).

Explanations compared (:func:`scene_effects` gathers their inputs):

* SIAM: the contribution c_i of each attribute on the original scene, against the SIAM model's own
  true effects.
* Grad-CAM on the baseline (``pytorch_grad_cam``, target = the predicted score): the attribution of
  attribute i is the Grad-CAM mass inside its true mask (on the input pixels). Grad-CAM has no
  native regression target: it was made for class logits, and it keeps only positive evidence
  (ReLU), so it cannot say that an attribute lowered the score; the score itself is used as the
  target, as in :mod:`siam.explain.faithfulness`.
* random: uniform random attributions against the SIAM model's effects (the chance level, 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siam.evaluation import planted as P

__all__ = ["SceneSet", "render_scene_set", "score_images", "siam_correctness", "gradcam_correctness",
           "random_correctness"]


@dataclass
class SceneSet:
    """Re-rendered scenes: ``images`` (S, H, W, 3) uint8 JPEG-decoded, with, per scene n and
    attribute k, ``index[n, k]`` the row of the image without k (-1 when k is not shown), and
    ``masks`` (N, K, H, W) bool of the originals (rows 0..N-1 of ``images``)."""

    images: np.ndarray
    index: np.ndarray
    masks: np.ndarray
    attributes: tuple[str, ...]
    ids: tuple[str, ...]

    @property
    def present(self) -> np.ndarray:
        return self.index >= 0


def _decoded(data: bytes) -> np.ndarray:
    from siam.data.images import decode_image

    return np.asarray(decode_image(data, name="re-rendered scene", max_megapixels=64))


def render_scene_set(root: str | Path, ids: Sequence[str], attributes: Sequence[str]) -> SceneSet:
    """Re-render SoN scenes ``ids`` of the ``siam synth`` folder ``root``: each as written, then
    without each of ``attributes`` it shows."""
    from siam.synth import encode_as_written, render_scene

    names = tuple(attributes)
    originals, edits, masks = [], [], []
    index = np.full((len(ids), len(names)), -1, dtype=np.int64)
    for n, ident in enumerate(ids):
        scene = render_scene(root, "son", ident)
        ti = [scene.attributes.index(a) for a in names]
        m = scene.masks[ti]  # (K, H, W)
        originals.append(_decoded(encode_as_written(scene)))
        masks.append(m)
        for k in np.flatnonzero(m.reshape(len(names), -1).any(1)):
            edits.append(_decoded(encode_as_written(render_scene(root, "son", ident, without=names[k]))))
            index[n, k] = len(ids) + len(edits) - 1
    return SceneSet(images=np.stack(originals + edits), index=index, masks=np.stack(masks),
                    attributes=names, ids=tuple(str(i) for i in ids))


@torch.no_grad()
def _batches(model: Any, images: np.ndarray, batch_size: int) -> list[Any]:
    from siam.data.transforms import eval_transform

    tf = eval_transform(model.preprocessing)
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.stack([tf(im) for im in images[i:i + batch_size]])
        out.append(model(x))
    return out


def _effects(scores: np.ndarray, scenes: SceneSet) -> np.ndarray:
    """(N, K) score(original) - score(without k); NaN where k is not shown."""
    n = len(scenes.ids)
    eff = np.full(scenes.index.shape, np.nan)
    pr = scenes.present
    eff[pr] = (scores[:n][:, None].repeat(scenes.index.shape[1], 1))[pr] - scores[scenes.index[pr]]
    return eff


def score_images(model: Any, scenes: SceneSet, *, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray | None]:
    """(scores (S,), SIAM contributions of the originals (N, K') in ``scenes.attributes`` order or
    None for a baseline)."""
    outs = _batches(model, scenes.images, batch_size)
    scores = torch.cat([o.score.float() for o in outs]).numpy().astype(np.float64)
    if not hasattr(outs[0], "contributions"):
        return scores, None
    contrib = torch.cat([o.contributions.float() for o in outs]).numpy()[: len(scenes.ids)]
    pos = {a: i for i, a in enumerate(model.attributes)}
    return scores, contrib[:, [pos[a] for a in scenes.attributes]]


def siam_correctness(model: Any, scenes: SceneSet, *, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Per image correctness of SIAM's contributions against the model's own true effects:
    ``{"correctness" (N,), "effects" (N, K), "attributions" (N, K)}``."""
    scores, contrib = score_images(model, scenes, batch_size=batch_size)
    if contrib is None:
        raise ValueError("siam_correctness needs a SIAM model (with contributions)")
    effects = _effects(scores, scenes)
    return {"correctness": P.correctness(contrib, np.nan_to_num(effects), scenes.present),
            "effects": effects, "attributions": contrib}


def gradcam_correctness(baseline: Any, scenes: SceneSet, *, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Per image correctness of the baseline's Grad-CAM mass inside each attribute's true mask
    against the baseline's own true effects."""
    from siam.data.transforms import eval_transform
    from siam.explain.faithfulness import gradcam_maps

    scores, _ = score_images(baseline, scenes, batch_size=batch_size)
    effects = _effects(scores, scenes)
    pre = baseline.preprocessing
    tf = eval_transform(pre)
    n = len(scenes.ids)
    x = torch.stack([tf(im) for im in scenes.images[:n]])
    gc = torch.as_tensor(gradcam_maps(baseline, x, batch_size=batch_size))  # (N, h, w) in [0, 1]
    fr = P.masks_on_model_grid(scenes.masks, gc.shape[-1], resize=pre.resize, crop=pre.crop)  # (N, K, h, w)
    mass = (gc[:, None] * fr).sum((-2, -1)).numpy()  # (N, K) Grad-CAM mass inside each mask
    return {"correctness": P.correctness(mass, np.nan_to_num(effects), scenes.present),
            "effects": effects, "attributions": mass}


def random_correctness(effects: np.ndarray, present: np.ndarray, *, seed: int) -> np.ndarray:
    """Per image correctness of uniform random attributions against ``effects`` (N, K)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    return P.correctness(rng.random(effects.shape), np.nan_to_num(effects), present)
