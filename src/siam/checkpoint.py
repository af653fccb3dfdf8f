"""Saving and loading models without ever unpickling untrusted code.

A SIAM model file is one ``.safetensors`` file whose header metadata key ``"siam"`` holds a JSON
document (the *meta*)::

    {"format": "siam-model", "version": 1, "siam_version": "...",
     "model": ModelConfig, "preprocessing": Preprocessing, "attributes": [...],
     "train_config": {...} | null, "metrics": {...} | null,
     "trained_on": {"kind": "synthetic" | "real" | "csv" | "mixed", ...} | null}

``trained_on`` (see :mod:`siam.provenance`) says what data trained the model; files written before
it existed (or by ``save_checkpoint`` without it) load as kind ``"unknown"``.

A human-readable copy of the meta is written next to it as ``<name>.json``. Lightning resume
files (``.ckpt``) are read with ``torch.load(weights_only=True)`` only; they carry the same meta
under the key ``"siam_meta"`` and the weights under ``"state_dict"`` prefixed with ``model.``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from siam.data.transforms import Preprocessing
from siam.errors import CheckpointError
from siam.models.backbones import build_backbone
from siam.models.baseline import Baseline
from siam.models.config import ModelConfig
from siam.models.siam import SIAM

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_file", "read_meta", "model_meta", "model_from_meta"]

FORMAT = "siam-model"
VERSION = 1


def _version() -> str:
    from siam import __version__

    return __version__


def model_meta(
    model: SIAM | Baseline,
    *,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    trained_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable description saved with ``model``; ``trained_on`` defaults to what a
    loaded model's ``meta`` recorded (re-saving keeps the provenance)."""
    if trained_on is None:
        trained_on = (getattr(model, "meta", None) or {}).get("trained_on")
    return {
        "format": FORMAT,
        "version": VERSION,
        "siam_version": _version(),
        "model": model.config.to_dict(),
        "preprocessing": model.preprocessing.to_dict(),
        "attributes": list(model.config.attributes),
        "train_config": train_config,
        "metrics": metrics,
        "trained_on": trained_on,
    }


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    model: SIAM | Baseline,
    path: str | os.PathLike[str],
    *,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    trained_on: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) plus ``<path>.json``, atomically.

    ``trained_on``: what trained it (:func:`siam.provenance.trained_on_record`)."""
    from safetensors.torch import save

    p = Path(path)
    if p.suffix != ".safetensors":
        raise CheckpointError(f"model files must end in .safetensors, got {str(p)!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = model_meta(model, train_config=train_config, metrics=metrics, trained_on=trained_on)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = save(tensors, metadata={"siam": json.dumps(meta)})
    _atomic_write_bytes(p, blob)
    _atomic_write_bytes(p.with_suffix(".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return p


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read only the meta of a model file (``.safetensors`` or ``.ckpt``)."""
    return _read(path, weights=False)[0]


#: The model file a ``siam train --out DIR`` (or quickstart stage) folder holds; passing the folder
#: itself as a checkpoint means this file.
MODEL_FILE = "model.safetensors"


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The model file ``path`` names: a ``siam train --out`` folder stands for its
    ``model.safetensors``; any other path is returned as is (:func:`load_checkpoint` then checks it).
    A folder without that file is a :class:`CheckpointError` saying what it holds."""
    p = Path(path)
    if not p.is_dir():
        return p
    if (p / MODEL_FILE).is_file():
        return p / MODEL_FILE
    resume = sorted(str(c.relative_to(p)) for c in p.glob("checkpoints/*.ckpt"))
    hint = (f"; it has Lightning resume files {resume[:3]} (a finished run also writes {MODEL_FILE})"
            if resume else "")
    raise CheckpointError(
        f"checkpoint {str(p)!r} is a folder without {MODEL_FILE}{hint}; allowed: a model file "
        f"(.safetensors or .ckpt) or the folder 'siam train --out' wrote"
    )


def _read(path: str | os.PathLike[str], *, weights: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    p = checkpoint_file(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {str(p)!r}")
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as fh:
                header = fh.metadata() or {}
                state = {k: fh.get_tensor(k) for k in fh.keys()} if weights else {}
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{p}: not a readable safetensors file ({exc})") from exc
        if "siam" not in header:
            raise CheckpointError(
                f"{p}: safetensors file has no 'siam' metadata; it is not a siam model file "
                "(plain backbone weights go to --pretrained instead)"
            )
        try:
            meta = json.loads(header["siam"])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{p}: 'siam' metadata is not valid JSON ({exc})") from exc
    elif p.suffix == ".ckpt":
        try:
            ckpt = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{p}: not a weights-only Lightning checkpoint ({exc})") from exc
        if not isinstance(ckpt, dict) or "siam_meta" not in ckpt:
            raise CheckpointError(f"{p}: Lightning checkpoint without 'siam_meta'; not written by siam")
        meta = ckpt["siam_meta"]
        raw = ckpt.get("state_dict", {}) if weights else {}
        state = {k[len("model."):]: v for k, v in raw.items() if k.startswith("model.")}
    else:
        raise CheckpointError(
            f"unsupported checkpoint file {str(p)!r}; allowed: .safetensors (model files) or .ckpt "
            "(Lightning resume files)"
        )
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: meta format is {meta.get('format') if isinstance(meta, dict) else meta!r}, expected {FORMAT!r}")
    return meta, state


def model_from_meta(meta: dict[str, Any], *, initialise: bool = True) -> SIAM | Baseline:
    """An untrained model with the architecture described by ``meta``.

    ``initialise=False`` skips the random initialisation (the weights are left uninitialised, for
    :func:`load_checkpoint`, which then assigns the saved tensors); deterministic buffers that are
    not saved (the border mask) are computed as usual.
    """
    config = ModelConfig.from_dict(meta["model"])
    pre = Preprocessing.from_dict(meta["preprocessing"])
    if config.kind not in ("siam", "baseline"):
        raise CheckpointError(f"unknown model kind {config.kind!r}; allowed: 'siam', 'baseline'")
    with contextlib.nullcontext() if initialise else _SkipRandomInit():
        backbone = build_backbone(name=config.backbone, pretrained=False)
        return (SIAM if config.kind == "siam" else Baseline)(backbone, config, preprocessing=pre)


class _SkipRandomInit(TorchFunctionMode):
    """While active (this thread only): ``torch.nn.init`` functions and in-place random fills
    return their tensor untouched, so building a module only allocates its parameters.

    ``torch.nn.init`` functions dispatch through ``__torch_function__`` (that is what makes them
    overridable), so the mode sees them by name; everything else runs unchanged.
    """

    _RANDOM_FILLS = frozenset(
        getattr(torch.Tensor, m) for m in ("normal_", "uniform_", "random_", "bernoulli_", "exponential_",
                                           "cauchy_", "log_normal_", "geometric_")
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" or func in self._RANDOM_FILLS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    attributes: Sequence[str] | None = None,
    map_location: str | torch.device = "cpu",
) -> SIAM | Baseline:
    """Load a model (architecture, weights, attribute names, preprocessing) from ``path``: a model
    file (``.safetensors``, or a Lightning ``.ckpt``) or a ``siam train --out`` folder (its
    ``model.safetensors``).

    If ``attributes`` is given it must equal the checkpoint's vocabulary (same names, same order),
    otherwise ``ValueError`` (:class:`CheckpointError`) says what differs. The model is built
    without random initialisation (which took about half the load time of a ResNet-50, and would
    consume the global RNG) and takes the saved tensors as its parameters; missing, unexpected or
    mis-shaped weights are errors as before.
    """
    meta, state = _read(path, weights=True)
    model = model_from_meta(meta, initialise=False)
    if attributes is not None and tuple(attributes) != tuple(model.config.attributes):
        have = list(model.config.attributes)
        want = list(attributes)
        raise CheckpointError(
            f"{path}: vocabulary mismatch: checkpoint has K={len(have)} attributes {have[:5]}..., "
            f"requested K={len(want)} {want[:5]}...; missing from checkpoint: "
            f"{sorted(set(want) - set(have))[:5]}, extra: {sorted(set(have) - set(want))[:5]}"
        )
    try:
        _load_state(model, state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the described model ({exc})") from exc
    model.meta = meta  # type: ignore[attr-defined]
    return model.to(map_location).eval()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict ``load_state_dict`` that *assigns* the tensors (no copy into the uninitialised
    parameters), cast to the dtype of the tensors they replace, as a copying load would."""
    current = model.state_dict(keep_vars=True)
    state = {k: v.to(current[k].dtype) if k in current and v.dtype != current[k].dtype else v
             for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
