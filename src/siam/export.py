"""``siam export``: a checkpoint to ONNX, with the explanation outputs and a dynamic batch axis.

The ONNX graph takes ``image`` (batch, 3, crop, crop), normalised as ``model.preprocessing`` says,
and returns, for a SIAM model::

    score (batch,)  presence (batch, K)  contributions (batch, K)  maps (batch, K, m, m)
    contribution_maps (batch, K, m, m)  [variance (batch,)]

and for a baseline ``score (batch,)``, ``cam (batch, h, w)`` [, ``variance``]. A SIAM model with
several targets (T > 1) keeps those outputs for its first target and adds every target's::

    scores (batch, T)  all_contributions (batch, T, K)  all_contribution_maps (batch, T, K, m, m)
    [variances (batch, T)]

(the target names are in the metadata, ``model.targets``). The spatial size is
fixed (the adaptive pooling to the template grid depends on it); the batch axis is dynamic. The
model's meta (attribute names, preprocessing, config) is stored as ONNX metadata under the key
``siam`` (JSON), so an ONNX consumer knows K, the names and how to prepare images.
Uses the ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``, needs onnxscript).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siam.errors import SiamError

__all__ = ["ExportError", "export_onnx", "onnx_output_names", "check_onnx", "add_arguments", "run"]

FORMATS = ("onnx",)


class ExportError(SiamError, ValueError):
    """The model could not be exported or the exported file disagrees with PyTorch."""


def onnx_output_names(model: nn.Module) -> list[str]:
    """Names of the ONNX outputs for ``model`` (see the module docstring)."""
    kind = model.config.kind  # type: ignore[attr-defined]
    names = ["score", "presence", "contributions", "maps", "contribution_maps"] if kind == "siam" else ["score", "cam"]
    variance = model.config.predict_variance  # type: ignore[attr-defined]
    if variance:
        names.append("variance")
    if kind == "siam" and len(model.targets) > 1:  # type: ignore[attr-defined]
        names += ["scores", "all_contributions", "all_contribution_maps"] + (["variances"] if variance else [])
    return names


class _Outputs(nn.Module):
    """Flattens SIAMOutput / BaselineOutput into a tuple of tensors in :func:`onnx_output_names` order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = onnx_output_names(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(getattr(out, n) for n in self.names)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
    input_size: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (SIAM or Baseline, float32, CPU) to the ONNX file ``path``.

    ``input_size`` defaults to ``model.preprocessing.crop``. ``meta`` (default: ``model.meta`` or
    the checkpoint meta rebuilt from the model) is embedded as metadata ``siam``.
    """
    from siam.checkpoint import model_meta

    p = Path(path)
    if p.suffix != ".onnx":
        raise ExportError(f"ONNX files must end in .onnx, got {str(p)!r}")
    size = int(input_size or model.preprocessing.crop)  # type: ignore[attr-defined]
    if size < 1:
        raise ExportError(f"--input-size must be >= 1, got {size}")
    model = model.float().cpu().eval()
    wrapper = _Outputs(model).eval()
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, input_names=["image"], output_names=wrapper.names,
            dynamic_shapes=({0: batch},), opset_version=opset, external_data=False, verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"ONNX export failed for a {model.config.kind} model at {size} px: {exc}") from exc
    import onnx

    proto = program.model_proto
    info = meta if meta is not None else getattr(model, "meta", None) or model_meta(model)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "siam", json.dumps(info)
    tmp = p.with_name(f".{p.name}.tmp")
    onnx.save_model(proto, str(tmp))
    os.replace(tmp, p)
    return p


def check_onnx(model: nn.Module, path: str | os.PathLike[str], *, batch_sizes: tuple[int, ...] = (1, 3),
               seed: int = 0) -> float:
    """Run the ONNX file with onnxruntime against PyTorch on random images.

    Returns the worst difference over outputs and batch sizes, each output's max abs difference
    divided by ``max(1, max |PyTorch value|)`` (absolute for values up to 1, relative above: the
    maps of an untrained ResNet-50 reach ~100)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[-1]
    names = [o.name for o in session.get_outputs()]
    wrapper = _Outputs(model.float().cpu().eval())
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, 3, size, size, generator=gen)
        with torch.inference_mode():
            ref = dict(zip(wrapper.names, wrapper(x)))
        got = session.run(names, {"image": x.numpy()})
        for name, value in zip(names, got):
            expected = ref[name].numpy()
            scale = max(1.0, float(np.abs(expected).max()))
            worst = max(worst, float(np.abs(value - expected).max()) / scale)
    return worst


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Export a checkpoint to ONNX (outputs: score, presence, contributions, maps, "
        "contribution_maps for SIAM, plus scores, all_contributions, all_contribution_maps with "
        "several targets; score, cam for the baseline), with a dynamic batch axis, "
        "then check it against PyTorch with onnxruntime."
    )
    parser.add_argument("--checkpoint", required=True, help="model file (.safetensors or .ckpt) or the folder 'siam train --out' wrote")
    parser.add_argument("--format", default="onnx", help="export format (only 'onnx')")
    parser.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="square input side in pixels (default: the checkpoint's crop)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max difference allowed by the onnxruntime check, absolute for values up to 1 "
                        "and relative above (default 1e-4)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")


def run(args: argparse.Namespace) -> int:
    from siam.checkpoint import load_checkpoint

    if args.format not in FORMATS:
        raise ExportError(f"unknown --format {args.format!r}; allowed: {list(FORMATS)}")
    model = load_checkpoint(args.checkpoint)
    out = export_onnx(model, args.out, opset=args.opset, input_size=args.input_size)
    message = f"wrote {out} (outputs: {', '.join(onnx_output_names(model))}; dynamic batch)"
    if not args.no_check:
        err = check_onnx(model, out)
        if not err <= args.tolerance:
            raise ExportError(f"{out}: onnxruntime differs from PyTorch by {err:.3g} > --tolerance {args.tolerance:g}")
        message += f"; onnxruntime matches PyTorch within {err:.1e}"
    print(message)
    return 0
