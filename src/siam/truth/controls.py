"""Controls that a real explanation must fail where it passes.

* :func:`shuffled_scores`: g trained (with the SoN stage's recipe, :func:`~siam.truth.oracle.fit_head`)
  over a frozen f's attribute maps but on SoN scores permuted across images: its contributions and
  templates must not match the planted ones (contribution_r, template_r ~ 0). The same loop on the
  true scores is returned beside it as the reference.
* :func:`cascading_randomisation`: Adebayo et al., "Sanity checks for saliency maps" (NeurIPS
  2018), cascading model-parameter randomisation: randomise g, then the attribute layer, then the
  backbone's blocks from the top down, cumulatively, and after each step compare the contribution
  maps E_i * A_i with the original model's (per-image Spearman rank correlation,
  :func:`siam.evaluation.planted.map_spearman`). An explanation that does not change when the
  model does explains nothing about the model.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from siam.evaluation import planted as P
from siam.models.siam import SIAM
from siam.truth.oracle import HeadRecipe, fit_head, head_recovery

__all__ = ["attribute_maps", "shuffled_scores", "randomisation_steps", "cascading_randomisation"]


@torch.no_grad()
def attribute_maps(model: SIAM, images: torch.Tensor, *, batch_size: int = 128) -> np.ndarray:
    """f's attribute maps of images (N, 3, H, W) -> (N, K, m, m) float32."""
    model.eval()
    out = [model.attribute_maps(images[i:i + batch_size])[0].float() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, model.num_attributes, model.config.grid, model.config.grid), np.float32)


def shuffled_scores(
    train_maps: np.ndarray, train_scores: np.ndarray, test_maps: np.ndarray, test_pooled_truth: np.ndarray,
    truth: P.PlantedTruth, attributes: Any, *, recipe: HeadRecipe, seed: int, border: int = 0,
    observed_share: float,
) -> dict[str, Any]:
    """g on permuted scores vs g on the true scores, both over the same frozen maps.

    train_maps (N, K, m, m), train_scores (N,), test_maps (M, K, m, m), test_pooled_truth
    (M, K, m_t, m_t). Returns ``{"contribution_r", "template_r", "reference": {...}}`` (reference:
    the same loop on unpermuted scores)."""
    y = np.asarray(train_scores, dtype=np.float32)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).permutation(len(y))
    out: dict[str, Any] = {}
    for key, scores in (("shuffled", y[perm]), ("reference", y)):
        head = fit_head(train_maps, scores, recipe=recipe, seed=seed)
        rec = head_recovery(head, test_maps, test_pooled_truth, truth, attributes, border=border,
                            observed_share=observed_share)
        out[key] = {"contribution_r": rec["contribution_r"], "template_r": rec["template_r"]}
    return {**out["shuffled"], "reference": out["reference"]}


def randomisation_steps(model: SIAM) -> list[tuple[str, list[nn.Module]]]:
    """The cascade's steps, top down: (name, modules re-initialised at that step)."""
    steps: list[tuple[str, list[nn.Module]]] = [("template_head", [model.template_head]),
                                                ("attribute_head", [model.attribute_head])]
    body = model.backbone.body
    blocks = [(n, m) for n, m in body.named_children() if any(True for _ in m.parameters())]
    for name, block in reversed(blocks):
        steps.append((f"backbone.{name}", [block]))
    return steps


@torch.no_grad()
def _randomise(module: nn.Module, reference: nn.Module | None, gen: torch.Generator) -> None:
    """Re-initialise every parameter of ``module``: conv/linear/BN layers by their own
    ``reset_parameters``; the template head (constant init) with random values of the trained
    parameters' scale (|N(0, sd)| for the non-negative templates)."""
    if hasattr(module, "templates"):
        for name, p in module.named_parameters():
            ref = dict(reference.named_parameters())[name] if reference is not None else p
            r = ref.detach().float()
            scale = float(r.std()) if r.numel() > 1 else float(r.abs())
            scale = scale if scale > 0 and scale == scale else 1.0  # zero or NaN spread: unit scale
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
        module.project_()  # type: ignore[operator]
        return
    for m in module.modules():
        if hasattr(m, "reset_parameters"):  # conv, linear, batch norm (also its running statistics)
            m.reset_parameters()  # type: ignore[operator]


@torch.no_grad()
def cascading_randomisation(model: SIAM, images: torch.Tensor, *, seed: int = 0, batch_size: int = 64) -> list[dict[str, Any]]:
    """Spearman between the original and the randomised contribution maps after each cumulative
    step: ``[{"name", "spearman", "per_image"}]`` (``spearman``: mean over the images whose original
    map is not constant; a randomised map that became constant counts as rho = 0; ``per_image`` (N,),
    NaN where the original map is constant). ``model`` is not changed."""
    def maps(m: SIAM) -> torch.Tensor:
        m.eval()
        return torch.cat([m(images[i:i + batch_size]).contribution_maps.float()
                          for i in range(0, len(images), batch_size)])  # (N, K, m, m)

    from siam.evaluation.planted import map_spearman

    work = copy.deepcopy(model)
    original = maps(work).numpy()
    flat = np.ptp(original.reshape(len(original), -1), axis=1) == 0  # (N,) constant original maps
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for name, modules in randomisation_steps(work):
            for mod in modules:
                ref = model.template_head if mod is work.template_head else None
                _randomise(mod, ref, gen)
            rho = np.asarray(map_spearman(original, maps(work).numpy()), dtype=np.float64)
            # A randomised map that became constant keeps none of the original's ranking: rho = 0;
            # images whose original map is constant have nothing to compare (NaN).
            rho = np.where(np.isnan(rho) & ~flat, 0.0, rho)
            finite = rho[np.isfinite(rho)]
            out.append({"name": name, "spearman": float(finite.mean()) if finite.size else None, "per_image": rho})
    return out
