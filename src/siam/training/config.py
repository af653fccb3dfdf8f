"""Typed, frozen training configuration read from YAML; unknown keys are rejected.

A recipe (``configs/*.yaml``) holds one :class:`TrainConfig` plus optional per-stage overrides::

    model: {backbone: tiny, grid: 8, border: 0}
    trainer: {max_epochs: 10}
    stages:
      son-head: {trainer: {max_epochs: 4}}

:func:`load_config` merges, in order: the dataclass defaults, the file, ``stages[<stage>]`` and
the ``key.sub=value`` overrides from the command line; every key is checked against the
dataclasses and every value against its type, and the error names the key, the value received
and what is allowed. The resolved config (``TrainConfig.to_dict()``) is saved in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union

from siam.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from siam.errors import ConfigError

__all__ = [
    "STAGES",
    "Stage",
    "DataConfig",
    "ModelSection",
    "PreprocessingSection",
    "OptimConfig",
    "TrainerConfig",
    "TrainConfig",
    "load_config",
    "read_recipe",
    "config_from_dict",
    "parse_override",
]

Stage = Literal["sun", "son-head", "joint", "baseline"]
STAGES: tuple[str, ...] = typing.get_args(Stage)
Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]


@dataclass(frozen=True)
class DataConfig:
    """Where the data lives and how it is batched.

    ``root`` is a folder in the ``siam synth`` layout (``sun/``, ``son/``, ``son_attributes.csv``)
    or in the CSV format (``attributes.csv``, ``targets.csv``; told apart by the folder's
    contents); ``sun`` / ``son`` override the synth layout's sub-folders (e.g. the real datasets
    elsewhere). ``split_seed``: the seed of the split drawn for CSV rows without a ``split`` column
    (written to ``OUT/splits.csv`` and reused from there). ``batch_size`` is
    the SUN batch and ``son_batch_size`` the SoN batch of each step (joint stage: one of each).
    ``cache`` decodes every image once into memory (uint8) - for small data sets such as the
    quickstart's. ``max_bad_fraction`` is how many undecodable images are tolerated (reported).
    ``masks``: the attribute masks of the optional mask supervision (``optim.mask_weight`` > 0; see
    :mod:`siam.data.masks`): a folder with ``mask_classes.csv`` + ``masks/<image stem>.png``, or a
    ``siam synth`` world / its ``truth/masks/sun``; null: ``data.root``'s ``truth/masks/sun`` when
    present. ``mask_fraction``: only this seeded (``split_seed``) fraction of the SUN training
    images keep their masks (the rest are trained on labels alone).
    ``balanced_sampling``: null (the paper: each epoch shuffles the SUN images once) or a rate r in
    (0, 1): SUN images are drawn with replacement, weighted so that every attribute present in fewer
    than r of the draws is lifted to r (:mod:`siam.data.balance`; single-process training only).
    """

    root: str | None = None
    sun: str | None = None
    son: str | None = None
    batch_size: int = 32
    son_batch_size: int | None = None
    val_batch_size: int = 64
    num_workers: int = 2
    cache: bool = False
    max_bad_fraction: float = 0.01
    limit_train: int | None = None
    limit_val: int | None = None
    split_seed: int = 0
    masks: str | None = None
    mask_fraction: float = 1.0
    balanced_sampling: float | None = None


@dataclass(frozen=True)
class ModelSection:
    """Architecture (see :func:`siam.build_model`); ``backbone``: resnet50, resnet18, tiny or
    ``timm:<name>``; ``pretrained``: false, "imagenet" (for timm backbones also "timm") or a path.

    ``presence_denominator``: ``"centre"`` (presence = tanh of the mean over the (m - 2 border)^2
    centre cells) or ``"grid"`` (sum / m^2, as the authors' code). ``presence_pooling``: ``"mean"``
    (the paper) or ``"lse"``: log-sum-exp pooling over the same cells with sharpness
    ``presence_lse_r`` (> 0; between the mean and the max; not in the paper, see
    :class:`siam.models.heads.AttributeHead`).
    """

    backbone: str = "resnet50"
    pretrained: bool | str = False
    grid: int | None = None
    border: int = 2
    presence: Literal["tanh", "sigmoid"] = "tanh"
    presence_denominator: Literal["centre", "grid"] = "centre"
    presence_pooling: Literal["mean", "lse"] = "mean"
    presence_lse_r: float = 10.0
    template_init: float = 0.01
    predict_variance: bool = False


@dataclass(frozen=True)
class PreprocessingSection:
    """Image preparation (see :class:`siam.data.transforms.Preprocessing`); paper: 500 / 450.

    ``mean`` / ``std``: the per-channel normalisation; null (the default) = what the backbone's
    weights expect (ImageNet's for the ResNets and ``tiny``, the pretrained config's for a
    ``timm:<name>`` backbone, e.g. 0.5 / 0.5 for Inception-v3 and ViTs).
    """

    resize: int = 500
    crop: int = 450
    max_rotation: float = 5.0
    hflip: bool = True
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def build(self, *, backbone: str | None = None) -> Preprocessing:
        """The :class:`Preprocessing`; a null mean/std comes from ``backbone`` (ImageNet's without one)."""
        mean, std = self.mean, self.std
        if mean is None or std is None:
            from siam.models.backbones import backbone_normalisation

            own_mean, own_std = backbone_normalisation(backbone) if backbone else (IMAGENET_MEAN, IMAGENET_STD)
            mean, std = mean or own_mean, std or own_std
        return Preprocessing(resize=self.resize, crop=self.crop, mean=tuple(mean), std=tuple(std),
                             max_rotation=self.max_rotation, hflip=self.hflip)


@dataclass(frozen=True)
class OptimConfig:
    """Adam with step decay (the authors' defaults), the joint weight lambda and penalties.

    ``lr_schedule``: ``"step"`` (the authors': multiply the learning rate by ``lr_decay_gamma``
    every ``lr_decay_every`` epochs; 0: constant) or ``"cosine"`` (per step from ``lr`` down to 0
    over the run's optimiser steps; the ``lr_decay_*`` keys are then unused). ``son_weight`` is
    lambda in L = L_SUN + lambda L_SoN (paper Sec. 3.3). ``template_l1``: weight of the optional
    L1 penalty on the templates. ``template_smoothness``: weight of the optional penalty on squared
    differences between neighbouring cells of the effective templates; it is part of the SoN objective (L_SoN + smoothness x roughness), so in
    the joint stage it is scaled by ``son_weight`` too. ``variance_weight``: weight of the
    vote-variance regression (models with ``predict_variance``). ``presence_pos_weight``: the
    positive weight of the SUN BCE per attribute, ``"none"`` (the paper), ``"balanced"``
    (sqrt(neg/pos) of the training labels, in [1, 10]) or one float for all attributes
    (:func:`siam.data.balance.presence_pos_weight`).

    The authors' code weights both adaptively; the ``*_mode`` keys offer that (gradients scaled by
    detached loss ratios, so each term's *value* is a fixed fraction of the main loss):

    * ``son_weight_mode``: ``"fixed"`` (L_SUN + lambda L_SoN, the paper's formula) or
      ``"adaptive"`` (L_SUN + lambda (L_SUN / L_SoN) L_SoN, the ratio detached; joint stage only).
    * ``template_l1_mode``: ``"fixed"`` (``template_l1`` x sum of |T|) or ``"adaptive"``
      (``template_l1`` x (L_ref / mean|T|) x mean|T|, the ratio detached, L_ref = L_SUN in the
      joint stage, else the SoN objective; the authors use weight 0.001).

    ``mask_weight``: weight of the optional mask supervision (not in the paper; 0 = the paper):
    L_SUN + mask_weight x :func:`~siam.training.losses.mask_loss` in the sun and joint stages, on
    the SUN rows with masks (``data.masks``).

    ``head_warmup_epochs``: for the first N epochs of a stage that trains the backbone (sun, joint,
    baseline), the backbone's weights are held and only the heads train (the attribute layer in
    the sun stage; "train the attribute layer alone" first, as linear probing before fine-tuning).
    Its BatchNorm layers keep tracking batch statistics, so the heads see the features they will
    see afterwards. 0 = the paper; no effect in the son-head stage, where f is frozen anyway.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: Literal["step", "cosine"] = "step"
    lr_decay_every: int = 10
    lr_decay_gamma: float = 0.1
    son_weight: float = 0.1
    son_weight_mode: Literal["fixed", "adaptive"] = "fixed"
    template_l1: float = 0.0
    template_l1_mode: Literal["fixed", "adaptive"] = "fixed"
    template_smoothness: float = 0.0
    variance_weight: float = 0.0
    mask_weight: float = 0.0
    presence_pos_weight: Literal["none", "balanced"] | float = "none"
    head_warmup_epochs: int = 0


@dataclass(frozen=True)
class TrainerConfig:
    """Engine options passed to :class:`lightning.Trainer` (DDP, precision, checkpoints, logs).

    ``progress_bar``: show progress; a live bar when stdout and stderr are terminals, else one plain
    line per epoch (no carriage returns in logs); false: neither.

    Reproducibility: ``seed`` seeds the weights, the augmentations and the data order (every
    shuffling loader and sampler has its own generator seeded from it; workers are seeded too).
    ``deterministic``: ``"warn"`` (default) uses deterministic kernels where torch has them and
    warns where it has none (``torch.use_deterministic_algorithms(True, warn_only=True)``), true
    raises there instead, false lets torch pick the fastest. ``num_threads``: torch's intra-op
    threads for the run (null: torch's default); a fixed count also fixes the summation order.
    """

    max_epochs: int = 30
    max_steps: int = -1
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Precision = "32-true"
    channels_last: bool = False
    checkpoint_every_n_steps: int = 200
    log_every_n_steps: int = 10
    val_every_n_epochs: int = 1
    progress_bar: bool = True
    seed: int = 0
    deterministic: bool | Literal["warn"] = "warn"
    num_threads: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    """One training run: a stage, its data, model, preprocessing, optimiser and engine options.

    ``init_from``: a checkpoint (``.ckpt``, ``.safetensors`` or its ``--out`` folder) of a previous stage whose weights
    start this one (e.g. ``son-head`` and ``joint`` from ``sun``). ``attributes``: restrict/reorder
    the vocabulary (default: the dataset's attribute names).
    """

    stage: Stage = "joint"
    out: str = "runs/siam"
    init_from: str | None = None
    attributes: tuple[str, ...] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    preprocessing: PreprocessingSection = field(default_factory=PreprocessingSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with top-level fields replaced (validated like a file)."""
        return config_from_dict(_deep_merge(self.to_dict(), _plain(changes)))


# --- parsing and validation -----------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    return obj


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (tuples for lists)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: got {value!r}; allowed: {_describe(tp)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where}: got {value!r}; allowed: {_describe(tp)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: got {value!r}; allowed: {_describe(tp)}")
        return tuple(_coerce(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    raise ConfigError(f"{where}: got {value!r} ({type(value).__name__}); allowed: {_describe(tp)}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + str(k) for k in unknown]}; allowed in "
            f"{where or 'the top level'}: {allowed}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _check_values(cfg: TrainConfig) -> None:
    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: got {value!r}; allowed: {allowed}")

    d, t, o = cfg.data, cfg.trainer, cfg.optim
    need(d.batch_size >= 1, "data.batch_size", d.batch_size, "an integer >= 1")
    need(d.son_batch_size is None or d.son_batch_size >= 1, "data.son_batch_size", d.son_batch_size, "null or >= 1")
    need(d.val_batch_size >= 1, "data.val_batch_size", d.val_batch_size, "an integer >= 1")
    need(d.num_workers >= 0, "data.num_workers", d.num_workers, "an integer >= 0")
    need(0.0 <= d.max_bad_fraction <= 1.0, "data.max_bad_fraction", d.max_bad_fraction, "a fraction in [0, 1]")
    need(d.balanced_sampling is None or 0.0 < d.balanced_sampling < 1.0, "data.balanced_sampling",
         d.balanced_sampling, "null or a target rate in (0, 1)")
    need(isinstance(o.presence_pos_weight, str) or o.presence_pos_weight > 0, "optim.presence_pos_weight",
         o.presence_pos_weight, "'none', 'balanced' or a float > 0")
    need(0 < cfg.model.presence_lse_r < math.inf, "model.presence_lse_r", cfg.model.presence_lse_r,
         "a finite float > 0")
    need(o.lr > 0, "optim.lr", o.lr, "a positive float")
    need(o.lr_decay_every >= 0, "optim.lr_decay_every", o.lr_decay_every, "epochs >= 0 (0: constant)")
    need(0 < o.lr_decay_gamma <= 1, "optim.lr_decay_gamma", o.lr_decay_gamma, "a factor in (0, 1]")
    need(0.0 <= d.mask_fraction <= 1.0, "data.mask_fraction", d.mask_fraction, "a fraction in [0, 1]")
    need(o.mask_weight >= 0, "optim.mask_weight", o.mask_weight, "a float >= 0 (0: no mask supervision, the paper)")
    need(o.head_warmup_epochs >= 0, "optim.head_warmup_epochs", o.head_warmup_epochs,
         "an integer >= 0 (0: no warm-up, the paper)")
    for key in ("son_weight", "template_l1", "template_smoothness", "variance_weight", "weight_decay"):
        need(getattr(o, key) >= 0, f"optim.{key}", getattr(o, key), "a float >= 0")
    need(t.max_epochs >= 1 or t.max_steps > 0, "trainer.max_epochs", t.max_epochs, ">= 1 (or set max_steps)")
    need(t.checkpoint_every_n_steps >= 1, "trainer.checkpoint_every_n_steps", t.checkpoint_every_n_steps, ">= 1")
    need(t.num_nodes >= 1, "trainer.num_nodes", t.num_nodes, ">= 1")
    need(t.num_threads is None or t.num_threads >= 1, "trainer.num_threads", t.num_threads, "null or >= 1")
    need(
        not isinstance(t.devices, str) or t.devices == "auto" or t.devices.lstrip("-").replace(",", "").isdigit(),
        "trainer.devices", t.devices, "'auto', an integer, or a list like '0,1'",
    )
    from siam.models.backbones import check_backbone_name

    try:
        check_backbone_name(cfg.model.backbone)
    except ConfigError as exc:
        raise ConfigError(f"model.backbone: got {cfg.model.backbone!r}; {exc}") from None
    try:
        cfg.preprocessing.build(backbone=cfg.model.backbone)
    except ValueError as exc:
        raise ConfigError(f"preprocessing: {exc}") from None


def config_from_dict(
    data: dict[str, Any], *, stage: str | None = None, overrides: typing.Sequence[dict[str, Any]] = ()
) -> TrainConfig:
    """Validate a (possibly partial) dict into a :class:`TrainConfig`.

    Precedence, lowest first: dataclass defaults, ``data``, ``data["stages"][stage]`` (per-stage
    overrides of a recipe), then ``overrides`` (e.g. from the command line).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of keys, got {type(data).__name__}")
    data = dict(data)
    stages = data.pop("stages", None) or {}
    if not isinstance(stages, dict) or set(stages) - set(STAGES):
        bad = sorted(set(stages) - set(STAGES)) if isinstance(stages, dict) else stages
        raise ConfigError(f"stages: unknown stage(s) {bad!r}; allowed: {list(STAGES)}")
    for override in overrides:
        if "stage" in override:
            stage = override["stage"] if stage is None else stage
    if stage is not None:
        if stage not in STAGES:
            raise ConfigError(f"stage: got {stage!r}; allowed: {list(STAGES)}")
        data["stage"] = stage
    chosen = data.get("stage", TrainConfig.stage)
    if chosen in stages:
        per_stage = stages[chosen]
        if not isinstance(per_stage, dict):
            raise ConfigError(f"stages.{chosen}: expected a mapping, got {per_stage!r}")
        if "stage" in per_stage or "stages" in per_stage:
            raise ConfigError(f"stages.{chosen}: may not set 'stage' or 'stages'")
        data = _deep_merge(data, per_stage)
    for override in overrides:
        data = _deep_merge(data, override)
    if stage is not None:
        data["stage"] = stage
    cfg = _build(TrainConfig, data, "")
    _check_values(cfg)
    return cfg


def parse_override(text: str) -> dict[str, Any]:
    """``"trainer.max_epochs=3"`` -> ``{"trainer": {"max_epochs": 3}}`` (value parsed as YAML)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. trainer.max_epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping of a YAML recipe file (not validated yet; see :func:`config_from_dict`)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {str(p)!r}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: a config must be a mapping of keys, got {type(loaded).__name__}")
    return loaded or {}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    stage: str | None = None,
    overrides: typing.Sequence[str | dict[str, Any]] = (),
) -> TrainConfig:
    """Read a YAML recipe (or none: the defaults), then apply its ``stages[stage]`` section and the
    ``KEY=VALUE`` strings (or nested dicts) in ``overrides``, which win."""
    data = read_recipe(path) if path is not None else {}
    parsed = [parse_override(o) if isinstance(o, str) else o for o in overrides]
    return config_from_dict(data, stage=stage, overrides=parsed)
