"""(5) Training step throughput, ResNet-50 SIAM at 450 px: the default precision vs float32 NCHW.
Goal: >= 2.5x.

The default is bf16 autocast + channels_last for the backbone where bf16 is native
(:func:`siam.scoring.inference.bf16_is_native`, :func:`~siam.scoring.inference.configure_backbone`;
the heads stay NCHW float32), else float32 NCHW, the training engine's default (``32-true``);
float32 channels_last is reported as an extra row.

One step = forward, a joint loss (MSE on the score + BCE on the presence), backward, SGD with
momentum, and the template projection (``model.project_()``), as in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import Result, at_least, interleaved_best

SIZE = 450
BATCH = 2


def _step_fn(precision: str, channels_last: bool):
    import siam
    from siam.scoring.inference import configure_backbone

    torch.manual_seed(0)
    model = siam.build_model(backbone="resnet50").train()
    if channels_last or precision == "bf16":  # backbone only: the SIAM heads stay NCHW float32
        configure_backbone(model, channels_last=channels_last,
                           dtype=torch.bfloat16 if precision == "bf16" else None)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    score = torch.rand(BATCH) * 9 + 1
    labels = torch.rand(BATCH, model.num_attributes).round()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.mse_loss(out.score.float(), score) + F.binary_cross_entropy(
            out.presence.float().clamp(1e-6, 1 - 1e-6), labels)
        loss.backward()
        opt.step()
        model.project_()

    return step


def run(quick: bool = False) -> list[Result]:
    import torch as _torch

    from siam.scoring.inference import bf16_is_native

    native = bf16_is_native(_torch.device("cpu"))
    reps = 1 if quick else 2
    fns = {"naive": _step_fn("fp32", channels_last=False), "fp32_cl": _step_fn("fp32", channels_last=True)}
    if native:
        fns["bf16_cl"] = _step_fn("bf16", channels_last=True)
    times = interleaved_best(fns, repeats=reps)
    default = "bf16_cl" if native else "naive"
    label = "bf16 autocast + channels_last" if native else "fp32 NCHW (no native bf16 here)"
    t_naive, t_default = times.wall["naive"], times.wall[default]
    goal, ok = at_least(t_naive / t_default, 2.5)
    out = [
        Result("training", "fp32 NCHW step", BATCH / t_naive, "img/s", note=f"batch {BATCH}, {SIZE} px"),
        Result("training", "fp32 channels_last step vs fp32 NCHW", t_naive / times.wall["fp32_cl"], "x",
               note=f"CPU-time ratio {times.cpu['naive'] / times.cpu['fp32_cl']:.2f}"),
    ]
    if native:
        out.append(Result("training", "bf16 channels_last step", BATCH / times.wall["bf16_cl"], "img/s"))
    out.append(Result("training", f"default ({label}) vs fp32 NCHW throughput", t_naive / t_default, "x", goal, ok,
                      note=f"CPU-time ratio {times.cpu['naive'] / times.cpu[default]:.2f}"))
    return out
