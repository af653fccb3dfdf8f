"""Backbones from timm: ``backbone="timm:<name>"`` for any timm model that exposes a feature map.

The model is created with ``timm.create_model(name, features_only=True, out_indices=(-1,))``; its
last feature map is f's output (B, C, h, w) (NHWC models, e.g. Swin, are permuted to NCHW). C and
the stride s come from the model's ``feature_info`` (``channels()[-1]``, ``reduction()[-1]``); the
default normalisation from its ``pretrained_cfg`` (``mean``/``std``). ``<name>`` may carry a
pretrained tag (``convnext_atto.d2_in1k``).

Weights (``pretrained``), never downloaded:

* ``False`` / ``None``: random initialisation.
* ``True`` / ``"timm"`` / ``"imagenet"``: timm's pretrained weights of that name (its default tag
  unless the name has one), **only from the local caches**: the Hugging Face hub cache
  (``$HF_HUB_CACHE``, file ``model.safetensors`` or ``pytorch_model.bin`` of the model's
  ``hf_hub_id``) or the torch hub cache (``$TORCH_HOME/hub/checkpoints/<file of its url>``).
  A missing file is a :class:`~siam.errors.CheckpointError` naming the file and where to put it.
* a path to a ``.safetensors`` / ``.pth`` file (read weights-only): either a full timm model's state
  dict (as ``timm.create_model(name).state_dict()`` or a hub ``model.safetensors``; the classifier is
  dropped) or the state dict of a siam timm backbone (``model.backbone.state_dict()``).

timm is an optional dependency (``pip install 'siam[timm]'``), imported only when a ``timm:`` name is
used.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from siam.errors import CheckpointError, ConfigError

__all__ = [
    "TIMM_PREFIX", "PRETRAINED_ALIASES", "TimmFeatures", "is_timm_name", "check_timm_name", "build_timm_body",
    "default_grid", "check_input_size",
]

TIMM_PREFIX = "timm:"
#: ``pretrained`` values meaning "timm's pretrained weights for this name, from the local cache".
PRETRAINED_ALIASES = ("timm", "imagenet")
#: File names timm publishes on the Hugging Face hub, in the order timm tries them.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
#: Prefixes a siam backbone state dict may carry (saved from ``model.backbone`` or ``model``).
_OWN_PREFIXES = ("backbone.body.net.", "body.net.", "net.")


def is_timm_name(name: str) -> bool:
    """Whether ``name`` asks for a timm backbone (``"timm:<model name>"``)."""
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(
            "backbone 'timm:...' needs the timm package, which is not installed; "
            "install it with: pip install 'siam[timm]' (or pip install 'timm>=1.0')"
        ) from exc
    return timm


def check_timm_name(name: str) -> str:
    """The timm model name in ``"timm:<name>"``; :class:`ConfigError` if timm does not know it."""
    arch = name[len(TIMM_PREFIX):]
    timm = _timm()
    if not arch or not timm.is_model(arch):
        known = timm.list_models()
        close = difflib.get_close_matches(arch.split(".")[0], known, n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close else ""
        raise ConfigError(
            f"unknown timm backbone {name!r}: timm {timm.__version__} has no model {arch!r}{hint} "
            "(list them with python -c \"import timm; print(timm.list_models('convnext*'))\")"
        )
    return arch


class TimmFeatures(nn.Module):
    """Wraps a timm ``features_only`` network: (B, 3, H, W) -> its last map (B, C, h, w), NCHW."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        fmt = getattr(net, "output_fmt", "NCHW")
        self.nhwc = str(getattr(fmt, "value", fmt)) == "NHWC"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.net(x)[-1]
        return feature.permute(0, 3, 1, 2) if self.nhwc else feature  # (B, C, h, w)


def _create(arch: str, name: str, **kwargs: Any) -> nn.Module:
    timm = _timm()
    try:
        return timm.create_model(arch, features_only=True, out_indices=(-1,), **kwargs)
    except (CheckpointError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - timm raises many types for unsupported models
        if kwargs.get("pretrained"):
            raise CheckpointError(f"weights do not fit timm backbone {name!r}: {exc}") from exc
        raise ConfigError(
            f"timm model {arch!r} does not expose a feature map (timm.create_model(..., features_only=True) "
            f"failed: {type(exc).__name__}: {exc}); choose a convolutional or hierarchical model, "
            "e.g. timm:convnext_atto or timm:efficientnet_b0"
        ) from exc


def _hub_cached_file(cfg: dict[str, Any]) -> tuple[Path | None, list[str]]:
    """The locally cached weights file for a timm pretrained cfg, and the places looked at."""
    looked: list[str] = []
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HUB_FILES
        for filename in names:
            found = try_to_load_from_cache(repo_id=hub_id, filename=filename)  # never goes online
            if isinstance(found, str) and Path(found).is_file():
                return Path(found), looked
            looked.append(f"{filename} of the Hugging Face repo {hub_id!r} in the hub cache {constants.HF_HUB_CACHE}")
    url = cfg.get("url")
    if url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if local.is_file():
            return local, looked
        looked.append(f"{local} (from {url})")
    return None, looked


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``path`` (safetensors or a weights-only torch file; EMA/``state_dict`` unwrapped)."""
    from timm.models import load_state_dict

    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise CheckpointError(
            f"{path}: could not be read as weights ({type(exc).__name__}: {exc}); allowed: a .safetensors "
            "file or a weights-only torch state dict (.pth/.pt/.bin)"
        ) from exc


def _own_state(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state`` renamed onto the features network when it is a siam backbone state dict, else None."""
    for prefix in ("",) + _OWN_PREFIXES:
        renamed = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if renamed and set(renamed) == set(own):
            return renamed
    return None


def build_timm_body(
    name: str, pretrained: bool | str | os.PathLike[str] | None
) -> tuple[TimmFeatures, dict[str, Any]]:
    """The features network for ``"timm:<arch>"`` with the requested weights, and its facts:
    ``{"channels", "stride", "mean", "std"}`` read from the model."""
    arch = check_timm_name(name)
    net = _create(arch, name, pretrained=False)
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    if pretrained is True or (isinstance(pretrained, str) and pretrained in PRETRAINED_ALIASES):
        path, looked = _hub_cached_file(cfg)
        if path is None:
            where = "; ".join(looked) or "(timm has no pretrained weights registered for it)"
            raise CheckpointError(
                f"pretrained weights for {name!r} are not in the local cache; looked for: {where}. This "
                "toolkit never downloads silently. Offline: on a machine with internet run "
                f"python -c \"import timm; timm.create_model('{arch}', pretrained=True)\" and copy its "
                "Hugging Face cache (~/.cache/huggingface/hub) here (or set HF_HUB_CACHE), or pass the "
                "weights file as pretrained=PATH (in a training config: model.pretrained: PATH)."
            )
    elif pretrained:
        path = Path(pretrained)
        if not path.is_file():
            raise CheckpointError(
                f"weights file not found: {str(path)!r}; put the .safetensors/.pth state dict of timm "
                f"model {arch!r} there, or use pretrained=False / pretrained='timm' (local hub cache)"
            )
    else:
        path = None
    if path is not None:
        state = _read_weights(path)
        own = _own_state(state, net.state_dict())
        if own is not None:
            try:
                net.load_state_dict(own, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(f"{path}: weights do not fit timm backbone {name!r}: {exc}") from exc
        else:  # a full timm model: timm maps it (its checkpoint filter, classifier dropped)
            net = _create(arch, name, pretrained=True, pretrained_cfg_overlay={"state_dict": state})
    info = net.feature_info
    facts = {
        "channels": int(info.channels()[-1]),
        "stride": int(info.reduction()[-1]),
        "mean": tuple(float(v) for v in cfg["mean"]) if cfg.get("mean") else None,
        "std": tuple(float(v) for v in cfg["std"]) if cfg.get("std") else None,
        # ViT, Swin, ...: the only input side the network accepts
        "fixed_input": int(cfg["input_size"][-1]) if cfg.get("fixed_input_size") and cfg.get("input_size") else None,
    }
    return TimmFeatures(net), facts


def check_input_size(spec_name: str, fixed_input: int | None, crop: int) -> None:
    """:class:`ConfigError` when a network with a fixed input side would get another crop."""
    if fixed_input is not None and crop != fixed_input:
        raise ConfigError(
            f"backbone {spec_name!r} accepts only {fixed_input}x{fixed_input} px inputs, but the preprocessing "
            f"crops {crop} px; set preprocessing crop: {fixed_input} (and resize >= it)"
        )


def default_grid(stride: int, input_size: int) -> int:
    """Template size m for ``input_size`` px at ``stride``: ceil(input / stride), as 450 / 32 -> 15."""
    return math.ceil(input_size / stride)


def timm_normalisation(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """(mean, std) the weights of ``"timm:<arch>"`` expect, from timm's pretrained config without
    building the network; None when timm records none."""
    cfg = _timm().models.get_pretrained_cfg(check_timm_name(name))
    if cfg is None or not cfg.mean or not cfg.std:
        return None
    mean, std = (tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std))
    return mean, std  # type: ignore[return-value]

