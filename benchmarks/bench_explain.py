"""(2) Explanation overhead, ResNet-50 at 450 px, batch 1.

* ``siam.explain`` (score, all K maps, contributions, contribution maps, as numpy) vs a plain
  forward pass of the same network (goal <= 1.05x);
* Grad-CAM (the ``grad-cam`` package) on the baseline for 1 target, and on a 33-output version of
  the baseline (backbone + pooled linear layer, one output per attribute) for one target per
  attribute (33 calls), each against the plain forward and against SIAM's explain.

Everything runs in float32 channels_last (the same precision for every method, so the ratios
compare methods, not dtypes); Grad-CAM needs gradients, so it runs with autograd on (that is the
method's cost).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.common import Result, at_most, best_time, interleaved_best, randomise_heads

SIZE = 450


class _ScoreOnly(nn.Module):
    """The baseline as grad-cam wants it: images -> (B, 1) score."""

    def __init__(self, baseline: nn.Module) -> None:
        super().__init__()
        self.baseline = baseline

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.baseline(x).score[:, None]  # (B, 1)


class _AttributeBaseline(nn.Module):
    """Backbone -> global average pooling -> linear, one output per attribute: (B, K)."""

    def __init__(self, backbone: nn.Module, k: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(backbone.out_channels, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x).mean((2, 3)))  # (B, K)


def run(quick: bool = False) -> list[Result]:
    import siam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from siam.models.backbones import build_backbone
    from siam.scoring.inference import prepare_for_inference

    try:
        from siam import explain
    except (ImportError, AttributeError):  # explanations not available: time the full SIAMOutput
        explain = None
    torch.manual_seed(0)
    model, _ = prepare_for_inference(randomise_heads(siam.build_model(backbone="resnet50")), "fp32", device="cpu")
    k = model.num_attributes
    x = torch.randn(1, 3, SIZE, SIZE)
    reps = 2 if quick else 3

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(x).score

    def explained() -> object:
        if explain is not None:
            return explain(model, x[0], model_id={})
        with torch.no_grad():
            out = model(x)
            return [t.numpy() for t in (out.score, out.maps, out.contributions, out.contribution_maps)]

    times = interleaved_best({"plain": plain, "explain": explained}, repeats=reps + 3)
    t_plain, t_explain = times.wall["plain"], times.wall["explain"]
    what = "siam.explain" if explain is not None else "forward returning SIAMOutput (siam.explain missing)"
    goal, ok = at_most(t_explain / t_plain, 1.05)
    out = [
        Result("explain", "plain forward", t_plain, "s/img"),
        Result("explain", f"{what} / plain forward", t_explain / t_plain, "x", goal, ok,
               note=f"all {k} maps + contributions in one pass; CPU-time ratio "
               f"{times.cpu['explain'] / times.cpu['plain']:.3f}"),
    ]
    baseline, _ = prepare_for_inference(siam.build_baseline(backbone="resnet50", bias=5.0), "fp32", device="cpu")
    layer = [baseline.backbone.body[-1]]
    cam1 = GradCAM(model=_ScoreOnly(baseline), target_layers=layer)
    t_cam1 = best_time(lambda: cam1(input_tensor=x, targets=[ClassifierOutputTarget(0)]), repeats=reps)
    out.append(Result("explain", "Grad-CAM baseline, 1 target / plain forward", t_cam1 / t_plain, "x"))
    out.append(Result("explain", "Grad-CAM baseline, 1 target / SIAM explain", t_cam1 / t_explain, "x"))
    multi = _AttributeBaseline(build_backbone(name="resnet50"), k).eval().to(memory_format=torch.channels_last)
    cam_k = GradCAM(model=multi, target_layers=[multi.backbone.body[-1]])

    measured = 3 if quick else k  # --quick times 3 targets and scales to K (each call is independent)

    def per_attribute() -> None:
        for j in range(measured):
            cam_k(input_tensor=x, targets=[ClassifierOutputTarget(j)])

    cam_k(input_tensor=x, targets=[ClassifierOutputTarget(0)])  # warm-up: hooks, oneDNN primitives
    t_cam_k = best_time(per_attribute, repeats=1, warmup=0) * k / measured
    note = "" if measured == k else f"--quick: {measured} targets timed, scaled to {k}"
    out.append(Result("explain", f"Grad-CAM, {k} targets (one per attribute) / plain forward", t_cam_k / t_plain, "x",
                      note=note))
    out.append(Result("explain", f"Grad-CAM, {k} targets / SIAM explain ({k} maps)", t_cam_k / t_explain, "x",
                      note=note))
    return out
