"""The default inference path: eval mode, channels_last, and bf16 where the hardware has it.

:func:`prepare_for_inference` is shared by ``siam score``, explanations and the web service::

    model, autocast = prepare_for_inference(model, precision="auto")
    with torch.inference_mode(), autocast:
        out = model(images)          # outputs are float32 whatever the precision

``precision="auto"`` picks bf16 only where it is native and fast: a CUDA GPU with bf16 support,
or a CPU with AVX512-BF16 or AMX (oneDNN). Elsewhere (e.g. AVX2-only CPUs, where bf16 is
emulated and slower than float32) it picks float32. bf16 covers the backbone only: the attribute
head and template head (a few thousand FLOPs) run in float32, so ``score == bias +
contributions.sum(1)`` still holds to float32 rounding and the maps stay within about 1% of
float32 (the backbone's rounding; checked by the tests and ``benchmarks/``).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Literal

import torch
from torch import nn

from siam.models.backbones import Backbone

__all__ = ["PRECISIONS", "Precision", "prepare_for_inference", "configure_backbone", "resolve_precision",
           "resolve_device", "bf16_is_native"]

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 convolutions are native (fast) on ``device``."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        if not torch.backends.mkldnn.is_available():
            return False
        cpu = torch.cpu
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            fn = getattr(cpu, probe, None)
            if fn is not None and fn():
                return True
    return False


def resolve_precision(precision: str = "auto", device: str | torch.device | None = None) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`bf16_is_native`, else ``"fp32"``; others pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {list(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if bf16_is_native(resolve_device(device)) else "fp32"


class _InferenceBackbone(Backbone):
    """A :class:`Backbone` on the fast path: channels_last input, optional bf16 autocast,
    float32 output, and (for SIAM) planar NCHW output.

    Swapped in as the instance's class (same parameters and state-dict keys), so heads, hooks
    (Grad-CAM), ``deepcopy`` and checkpoints see the original module tree. The SIAM heads stay
    NCHW: their ``einsum`` over channels_last maps is ~60x slower on CPU (0.5 s vs 8 ms for a
    batch of 4 at K=33), while the baseline's CAM ``einsum`` is faster on channels_last features.
    """

    _inference_dtype: torch.dtype | None = None
    _channels_last: bool = True
    _planar_output: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w) float32 features."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._inference_dtype is None:
            features = self.body(x)  # (B, C, h, w)
        else:
            with torch.autocast(device_type=x.device.type, dtype=self._inference_dtype):
                features = self.body(x)  # (B, C, h, w) in bf16
            features = features.float()
        return features.contiguous() if self._planar_output else features


def prepare_for_inference(
    model: nn.Module,
    precision: str = "auto",
    *,
    device: str | torch.device | None = None,
    channels_last: bool = True,
) -> tuple[nn.Module, ContextManager[None]]:
    """Put ``model`` (SIAM or Baseline) on the default inference path, in place.

    Moves it to ``device`` (default: CUDA if available, else CPU), sets eval mode, converts the
    backbone's convolutions to channels_last (oneDNN / cuDNN NHWC kernels; the SIAM heads stay
    NCHW, see :class:`_InferenceBackbone`) and, for bf16, makes the backbone compute in bf16
    autocast while the heads stay float32.

    Returns ``(model, context)``; run the forward inside ``context`` (a no-op today: the precision
    lives in the model so that a forgotten ``with`` cannot change results; kept so that callers do
    not change if a global autocast region is ever needed). The chosen precision is recorded as
    ``model.inference_precision``.
    """
    dev = resolve_device(device)
    chosen = resolve_precision(precision, dev)
    model = configure_backbone(
        model.to(dev).eval(), channels_last=channels_last, dtype=torch.bfloat16 if chosen == "bf16" else None
    )
    model.inference_precision = chosen  # type: ignore[assignment]
    return model, contextlib.nullcontext()


def configure_backbone(model: nn.Module, *, channels_last: bool = True, dtype: torch.dtype | None = None) -> nn.Module:
    """Make ``model.backbone`` (SIAM or Baseline) run channels_last and/or in ``dtype`` autocast,
    in place, leaving the heads NCHW float32 (see :class:`_InferenceBackbone`). Also usable for
    training (it does not change the train/eval mode or the parameters)."""
    backbone = getattr(model, "backbone", None)
    if type(backbone) not in (Backbone, _InferenceBackbone):
        raise ValueError(
            f"prepare_for_inference expects a siam model (SIAM or Baseline) with a siam Backbone, got "
            f"{type(model).__name__} with backbone {type(backbone).__name__}"
        )
    backbone.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    backbone.__class__ = _InferenceBackbone
    backbone._inference_dtype = dtype
    backbone._channels_last = channels_last
    backbone._planar_output = getattr(getattr(model, "config", None), "kind", "siam") == "siam"
    return model
