"""Run one training stage with Lightning: build the model, the Trainer and its plug-ins, fit, export.

:func:`fit` is what ``siam train`` and ``siam quickstart`` call. Per run folder ``out``::

    out/checkpoints/last.ckpt   Lightning resume file (atomic, every N steps and at the end)
    out/logs/                   CSV logs          out/tensorboard/   TensorBoard logs
    out/model.safetensors       final model (+ out/model.json: config, preprocessing, names, metrics)

Progress (``trainer.progress_bar``): a live bar when stdout and stderr are terminals, else one plain
line per epoch (:class:`~siam.training.callbacks.EpochLines`), so logs hold no carriage returns.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from siam.checkpoint import MODEL_FILE, load_checkpoint, read_meta, save_checkpoint
from siam.data.datamodule import SCORE_TARGET, SiamDataModule
from siam.errors import CheckpointError, ConfigError
from siam.models.baseline import Baseline, build_baseline
from siam.models.siam import SIAM, build_model
from siam.progress import interactive
from siam.training.callbacks import AtomicCheckpointIO, EpochLines, LastCheckpoint, ResumeNotice
from siam.training.config import TrainConfig
from siam.training.module import NonFiniteError, SiamModule

__all__ = ["FitResult", "fit", "build_stage_model", "prepare_model", "check_targets", "resume_path", "stage_trained_on",
           "LAST_CKPT"]

LAST_CKPT = "checkpoints/last.ckpt"


@dataclass
class FitResult:
    """What a finished stage produced."""

    out: Path
    model_path: Path | None
    last_checkpoint: Path
    global_step: int
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    model: SIAM | Baseline | None = None


def build_stage_model(
    cfg: TrainConfig, attributes: tuple[str, ...] | None, targets: Sequence[str] = (SCORE_TARGET,)
) -> SIAM | Baseline:
    """An untrained model for ``cfg.stage`` (Baseline for ``baseline``, else SIAM) predicting ``targets``."""
    m = cfg.model
    pre = cfg.preprocessing.build(backbone=cfg.model.backbone)
    if cfg.stage == "baseline":
        return build_baseline(backbone=m.backbone, pretrained=m.pretrained, predict_variance=m.predict_variance,
                              preprocessing=pre, targets=targets)
    names = cfg.attributes or attributes
    return build_model(
        backbone=m.backbone, attributes=names, pretrained=m.pretrained, grid=m.grid, border=m.border,
        presence=m.presence, presence_denominator=m.presence_denominator,
        presence_pooling=m.presence_pooling, presence_lse_r=m.presence_lse_r, template_init=m.template_init,
        predict_variance=m.predict_variance,
        preprocessing=pre, targets=targets,
    )


def prepare_model(
    cfg: TrainConfig,
    attributes: tuple[str, ...] | None,
    son_train_mean: float | Sequence[float] | None,
    *,
    targets: Sequence[str] = (SCORE_TARGET,),
) -> SIAM | Baseline:
    """The stage's starting model: built from ``cfg`` for the data's ``targets``, weights from
    ``cfg.init_from`` if given, and each b_t set to target t's mean training score
    (``son_train_mean``: one float or one per target) when this stage starts training g (paper
    Sec. 4.1). A model trained on other targets refuses to continue (:func:`check_targets`)."""
    model = build_stage_model(cfg, attributes, targets)
    init_stage = _init_from(model, cfg.init_from) if cfg.init_from else None
    trains_g = cfg.stage in ("son-head", "joint", "baseline")
    if trains_g and init_stage in (None, "sun") and son_train_mean is not None:
        model.set_bias(son_train_mean)
    return model


def check_targets(trained: Sequence[str], data: Sequence[str], *, stage: str | None, where: str) -> bool:
    """Whether a model trained (in ``stage``) on the targets ``trained`` may continue on data with
    the targets ``data``; raises :class:`ConfigError` when not. Returns True when the data's targets
    replace the model's: a ``sun``-stage model (g never trained), or a one-target model from before
    targets were named (``("score",)``) on one-target data. Otherwise the names (and their order)
    must be equal."""
    trained, data = tuple(trained), tuple(data)
    if trained == data:
        return False
    if stage == "sun" or (trained == (SCORE_TARGET,) and len(data) == 1):
        return True
    raise ConfigError(
        f"{where} was trained on the targets {list(trained)} (stage {stage!r}), but this data has the targets "
        f"{list(data)}; a model continues on the same targets only. Train from the sun stage's model, or give "
        "the data the same target columns"
    )


def _init_from(model: SIAM | Baseline, path: str) -> str | None:
    """Copy a previous stage's weights into ``model``; returns that stage's name (if recorded)."""
    src = load_checkpoint(path)
    if type(src) is not type(model):
        raise ConfigError(f"init_from {path!r} holds a {type(src).__name__}, this stage trains a {type(model).__name__}")
    meta = getattr(src, "meta", {}) or {}
    stage = meta.get("stage") or (meta.get("train_config") or {}).get("stage")
    renamed = check_targets(src.config.targets, model.config.targets, stage=stage, where=f"init_from {path!r}")
    mine, theirs = model.config.to_dict(), src.config.to_dict()
    skip = ("predict_variance", "targets")
    diff = {k: (theirs.get(k), v) for k, v in mine.items() if k not in skip and theirs.get(k) != v}
    if diff:
        raise ConfigError(
            f"init_from {path!r} does not match this stage's model: "
            + "; ".join(f"{k}: checkpoint {a!r}, config {b!r}" for k, (a, b) in diff.items())
        )
    state = src.state_dict()
    fresh_g = renamed and len(src.config.targets) != len(model.config.targets)  # a sun-stage g: not carried
    if fresh_g:
        state = {k: v for k, v in state.items() if not k.startswith("template_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("template_head." if fresh_g else "template_head.var_")]:
        raise CheckpointError(f"init_from {path!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return stage


def stage_trained_on(cfg: TrainConfig) -> dict[str, Any]:
    """What this stage trains on (:func:`siam.provenance.trained_on_record`): the folders of the
    datasets it uses, after what its ``init_from`` checkpoint was trained on."""
    from siam.data.csv_folder import is_csv_folder
    from siam.data.datamodule import STAGE_DATASETS
    from siam.provenance import trained_on, trained_on_record

    d = cfg.data
    root = Path(d.root) if d.root is not None else None
    given = {"sun": d.sun, "son": d.son}
    csv_dir = root if root is not None and d.sun is None and d.son is None and is_csv_folder(root) else None
    folders = {}
    for name in STAGE_DATASETS[cfg.stage]:
        if csv_dir is not None:
            folders[name] = csv_dir
            continue
        folder = Path(given[name]) if given[name] is not None else (root / name if root is not None else None)
        if folder is not None:
            folders[name] = folder
    previous = trained_on(read_meta(cfg.init_from)) if cfg.init_from else None
    return trained_on_record(cfg.stage, folders, previous=previous)


def resume_path(out: str | os.PathLike[str], resume: bool | str | None) -> str | None:
    """``True`` -> ``out/checkpoints/last.ckpt`` (must exist); a string -> that file; else None."""
    if not resume:
        return None
    p = Path(out) / LAST_CKPT if resume is True else Path(resume)
    if not p.is_file():
        raise CheckpointError(
            f"cannot resume: {str(p)!r} does not exist (a run writes it every "
            "trainer.checkpoint_every_n_steps steps); start without --resume"
        )
    return str(p)


def _check_resume(path: str, cfg: TrainConfig) -> None:
    meta = read_meta(path)
    stage = meta.get("stage") or (meta.get("train_config") or {}).get("stage")
    if stage != cfg.stage:
        raise ConfigError(f"--resume {path!r} is a {stage!r} run, but this run's stage is {cfg.stage!r}")


def _check_resume_targets(path: str, targets: Sequence[str]) -> None:
    trained = tuple((read_meta(path).get("model") or {}).get("targets") or (SCORE_TARGET,))
    if trained != tuple(targets):
        raise ConfigError(f"--resume {path!r} trains the targets {list(trained)}, but this data has the targets "
                          f"{list(targets)}; resume on the data the run started with")


def _trainer(cfg: TrainConfig, out: Path, callbacks: list[L.Callback]) -> L.Trainer:
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = cfg.trainer
    ckpt = LastCheckpoint(out / "checkpoints", every_n_train_steps=t.checkpoint_every_n_steps)
    cbs: list[L.Callback] = [ckpt, LearningRateMonitor(logging_interval="epoch"), *callbacks]
    # A live bar only on a terminal; in a log (CI, nohup, a file) plain lines, no carriage returns.
    bar = t.progress_bar and interactive()
    if bar:
        cbs.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps)))
    elif t.progress_bar:
        cbs.append(EpochLines())
    devices: Any = t.devices
    if isinstance(devices, str) and devices != "auto" and "," not in devices:
        devices = int(devices)
    return L.Trainer(
        default_root_dir=str(out),
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        callbacks=cbs,
        logger=[CSVLogger(str(out), name="logs"), TensorBoardLogger(str(out), name="tensorboard")],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=max(1, t.val_every_n_epochs),
        limit_val_batches=None if t.val_every_n_epochs > 0 else 0,
        num_sanity_val_steps=0,
        enable_progress_bar=bar,
        enable_model_summary=False,
        deterministic=t.deterministic,
    )


def _pos_weight(cfg: TrainConfig, datamodule: SiamDataModule) -> torch.Tensor | None:
    """``optim.presence_pos_weight`` as a (K,) tensor from the SUN training labels (None: off)."""
    mode = cfg.optim.presence_pos_weight
    if mode == "none" or cfg.stage not in ("sun", "joint") or "sun" not in datamodule.train_sets:
        return None
    from siam.data.balance import dataset_labels, presence_pos_weight

    weights = presence_pos_weight(dataset_labels(datamodule.train_sets["sun"]), mode)
    if weights is not None:
        print(f"siam train: presence_pos_weight={mode!r}: min {float(weights.min()):.2f}, "
              f"max {float(weights.max()):.2f} over {len(weights)} attributes", flush=True)
    return weights


def fit(
    cfg: TrainConfig,
    *,
    datamodule: SiamDataModule | None = None,
    attributes: tuple[str, ...] | None = None,
    son_train_mean: float | Sequence[float] | None = None,
    resume: bool | str | None = None,
    callbacks: list[L.Callback] | tuple[L.Callback, ...] = (),
) -> FitResult:
    """Train ``cfg.stage`` and export ``out/model.safetensors``.

    ``datamodule``/``attributes``/``son_train_mean`` default to what ``cfg.data`` describes (see
    :func:`siam.data.datamodule.datamodule_from_config`); the model predicts the datamodule's
    ``targets`` (``("score",)`` for one without). ``resume``: ``True`` for
    ``out/checkpoints/last.ckpt`` or a path; Lightning restores weights, optimiser, scheduler and
    loop state (global step), loading with ``weights_only=True``.
    """
    start = time.perf_counter()
    out = Path(cfg.out)
    ckpt_path = resume_path(out, resume)
    if ckpt_path is None and (out / LAST_CKPT).exists():
        raise ConfigError(
            f"{out} already holds a run ({out / LAST_CKPT}); pass --resume to continue it or choose "
            "another --out (nothing is overwritten)"
        )
    if ckpt_path is not None:
        _check_resume(ckpt_path, cfg)
    threads = torch.get_num_threads()
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    try:
        return _fit(cfg, out, ckpt_path, start, datamodule, attributes, son_train_mean, list(callbacks))
    finally:
        torch.set_num_threads(threads)


def _fit(
    cfg: TrainConfig,
    out: Path,
    ckpt_path: str | None,
    start: float,
    datamodule: SiamDataModule | None,
    attributes: tuple[str, ...] | None,
    son_train_mean: float | Sequence[float] | None,
    callbacks: list[L.Callback],
) -> FitResult:
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if datamodule is None:
        from siam.data.datamodule import datamodule_from_config

        datamodule, attributes, son_train_mean = datamodule_from_config(cfg)
    targets = tuple(getattr(datamodule, "targets", (SCORE_TARGET,)))
    if ckpt_path:
        _check_resume_targets(ckpt_path, targets)
        model = build_stage_model(cfg, attributes, targets)
    else:
        model = prepare_model(cfg, attributes, son_train_mean, targets=targets)
    provenance = stage_trained_on(cfg)
    module = SiamModule(model, stage=cfg.stage, optim=cfg.optim, train_config=cfg.to_dict(),
                        channels_last=cfg.trainer.channels_last, trained_on=provenance,
                        pos_weight=_pos_weight(cfg, datamodule))
    trainer = _trainer(cfg, out, [ResumeNotice(ckpt_path), *callbacks])
    with warnings.catch_warnings():
        # Frozen parts (son-head: f) are in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    metrics["global_step"] = float(trainer.global_step)
    model_path = None
    if trainer.is_global_zero:
        bad = [n for n, v in module.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteError(f"refusing to export non-finite weights ({bad[:5]}) to {out / 'model.safetensors'}")
        model_path = save_checkpoint(module.model.cpu(), out / MODEL_FILE,
                                     train_config=cfg.to_dict(), metrics=metrics, trained_on=provenance)
    return FitResult(
        out=out, model_path=model_path, last_checkpoint=out / LAST_CKPT, global_step=trainer.global_step,
        metrics=metrics, wall_time_s=time.perf_counter() - start, model=module.model,
    )
