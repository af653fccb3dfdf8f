"""The LightningModule: losses, optimiser and template projection over a plain SIAM / Baseline.

Stages (paper Sec. 3.3 and 4.2):

=========== ============================== ================================================
stage       trains                         loss
=========== ============================== ================================================
``sun``     f (backbone + attribute head)  L_SUN on SUN rows
``son-head`` g (template head); f frozen   L_SoN on SoN rows ("no finetuning" row of Tab. 2)
``joint``   f and g                        L_SUN + lambda L_SoN
``baseline`` the unconstrained regressor    L_SoN on SoN rows
=========== ============================== ================================================

A training batch is a dict ``{"sun": Batch, "son": Batch}`` (either key may be absent), one batch
of each dataset per step; each loss only sees rows of its own dataset (the Batch masks). With T
targets the batches' ``scores`` (B, T) columns are the model's targets in order; L_SoN is the mean
over targets of each target's MSE on its rows with a value (the template penalties, sums over the
targets' templates, are divided by T alike, so each target's g sees the one-target objective / T,
which Adam's step depends on only through its eps), and validation logs ``val/son_rmse``
(target 0) and, with T > 1, ``val/son_rmse_<target>`` for each.
The templates are projected onto >= 0 after *every* optimiser step, a non-finite loss or weight
stops training with an error naming the step (nothing is saved), and every Lightning checkpoint
carries ``ckpt["siam_meta"]`` (model config, preprocessing, attribute names, train config).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torchmetrics import CatMetric, MeanSquaredError

from siam.checkpoint import model_meta
from siam.data.samples import Batch
from siam.errors import SiamError
from siam.models.baseline import Baseline, BaselineOutput
from siam.models.siam import SIAM, SIAMOutput
from siam.training.config import STAGES, OptimConfig
from siam.training.losses import mask_loss, son_loss, sun_loss

__all__ = ["SiamModule", "NonFiniteError", "trainable_parts"]


class NonFiniteError(SiamError, FloatingPointError):
    """A loss or a weight became NaN/inf; training stops and nothing is saved."""


def trainable_parts(model: SIAM | Baseline, stage: str) -> dict[str, bool]:
    """Which sub-modules a stage trains: ``{name: requires_grad}``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; allowed: {list(STAGES)}")
    if stage == "baseline":
        if not isinstance(model, Baseline):
            raise ValueError(f"stage 'baseline' trains a Baseline model, got {type(model).__name__}")
        return {"backbone": True, "regressor": True}
    if not isinstance(model, SIAM):
        raise ValueError(f"stage {stage!r} trains a SIAM model, got {type(model).__name__}")
    f = stage in ("sun", "joint")
    g = stage in ("son-head", "joint")
    return {"backbone": f, "attribute_head": f, "template_head": g}


class SiamModule(L.LightningModule):
    """Train ``model`` for ``stage`` with Adam + step decay (:class:`OptimConfig`).

    ``train_config`` (the resolved :class:`~siam.training.config.TrainConfig` as a dict) is stored
    in every checkpoint's ``siam_meta``, as is ``trained_on`` (:mod:`siam.provenance`).
    ``channels_last`` converts model and inputs. ``pos_weight``: (K,) positive weight per attribute
    in the SUN loss (``optim.presence_pos_weight``; None: 1).
    """

    def __init__(
        self,
        model: SIAM | Baseline,
        *,
        stage: str,
        optim: OptimConfig | None = None,
        train_config: dict[str, Any] | None = None,
        channels_last: bool = False,
        trained_on: dict[str, Any] | None = None,
        pos_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.trained_on = trained_on
        self.model = model
        self.stage = stage
        self.optim = optim or OptimConfig()
        self.train_config = train_config
        self.channels_last = channels_last
        self._parts = trainable_parts(model, stage)
        for name, train in self._parts.items():
            getattr(model, name).requires_grad_(train)
        if channels_last:
            # the convolutions only: g's templates (T, K, 2, m, m) have no channels_last layout
            for part in self.model.children():
                if part is not getattr(self.model, "template_head", None):
                    part.to(memory_format=torch.channels_last)
        self.val_rmse = MeanSquaredError(squared=False)
        targets = model.targets
        # one RMSE per further target (target 0 is val_rmse)
        self.val_rmse_targets = torch.nn.ModuleList([MeanSquaredError(squared=False) for _ in targets[1:]])
        self.val_presence = CatMetric()
        self.val_labels = CatMetric()
        self.train(self.training)

    def on_train_epoch_start(self) -> None:
        self.train(True)  # Lightning does not call .train() on a module that is already training

    # --- modes ------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "SiamModule":
        """Frozen parts stay in eval mode (no BatchNorm statistics updates) while training."""
        super().train(mode)
        if mode:
            for name, train in self._parts.items():
                if not train:
                    getattr(self.model, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> SIAMOutput | BaselineOutput:
        """The wrapped model's output for images (B, 3, H, W)."""
        return self.model(self._prepare(x))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # --- losses -----------------------------------------------------------------------------------

    def compute_losses(self, batches: Mapping[str, Batch]) -> dict[str, torch.Tensor]:
        """Per-term losses and their weighted ``total`` for one step's batches."""
        o = self.optim
        terms: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        sun = batches.get("sun")
        if self.stage in ("sun", "joint") and sun is not None and bool(sun.attributes_mask.any()):
            if sun.attributes is None:
                raise ValueError("a SUN batch without attribute labels reached the SUN loss")
            out = self.model(self._prepare(sun.image))
            terms["sun"] = sun_loss(out.presence, sun.attributes, sun.attributes_mask, pos_weight=self.pos_weight)
            total = terms["sun"]
            if o.mask_weight > 0 and sun.masks is not None and isinstance(out, SIAMOutput):
                terms["mask"] = self._mask_term(out, sun)
                total = total + o.mask_weight * terms["mask"]
        son = batches.get("son")
        son_total: torch.Tensor | None = None  # the SoN objective: L_SoN (+ smoothness penalty)
        if self.stage in ("son-head", "joint", "baseline") and son is not None and bool(son.scores_mask.any()):
            out = self.model(self._prepare(son.image))
            self._check_targets(son)
            terms["son"] = son_loss(
                out.scores, son.scores, son.scores_mask,
                variance=out.variances, variance_target=son.variances, variance_mask=son.variances_mask,
                variance_weight=o.variance_weight,
            )
            son_total = terms["son"]
            if o.template_smoothness > 0 and isinstance(self.model, SIAM) and self._parts.get("template_head"):
                # per target, averaged like L_SoN: each target's g sees the one-target objective / T
                terms["template_roughness"] = self.model.template_roughness() / len(self.model.targets)
                son_total = son_total + o.template_smoothness * terms["template_roughness"]
            weight: float | torch.Tensor = o.son_weight if self.stage == "joint" else 1.0
            if self.stage == "joint" and o.son_weight_mode == "adaptive" and "sun" in terms:
                # The authors' weighting: lambda L_SoN rescaled to lambda L_SUN in value.
                weight = o.son_weight * _ratio(terms["sun"], son_total)
            total = weight * son_total if total is None else total + weight * son_total
        if total is None:
            raise ValueError(
                f"stage {self.stage!r} got a step without any usable rows (batches: {sorted(batches)}); "
                "the SUN loss needs SUN rows with labels and the SoN loss SoN rows with scores"
            )
        if o.template_l1 > 0 and isinstance(self.model, SIAM) and self._parts.get("template_head"):
            if o.template_l1_mode == "fixed":
                terms["template_l1"] = self.model.template_l1() / len(self.model.targets)  # mean over targets
                total = total + o.template_l1 * terms["template_l1"]
            else:  # the authors': mean |T| rescaled to the main loss in value
                terms["template_l1"] = self.model.template_head.templates.abs().mean()
                main = terms.get("sun", son_total)  # a step has at least one of them (else raised above)
                total = total + o.template_l1 * _ratio(main, terms["template_l1"]) * terms["template_l1"]
        terms["total"] = total
        return terms

    def _check_targets(self, batch: Batch) -> None:
        t = len(self.model.targets)
        if batch.num_targets != t:
            raise ValueError(f"a batch with {batch.num_targets} target(s) reached a model of {t} "
                             f"({list(self.model.targets)}); the data and the model must have the same targets")

    def _mask_term(self, out: SIAMOutput, sun: Batch) -> torch.Tensor:
        """mask_loss of the maps of the SUN rows that have labels and masks (optim.mask_weight),
        scaled by the share of the batch's labelled SUN rows that have a mask.

        So the term is a mean over the labelled images, an image without a mask adding 0: each masked
        image pulls as hard as under full supervision, whatever ``data.mask_fraction`` is. (A mean
        over the masked rows alone would give the ~1.6 masked images of a 16-image batch at a 10 %
        fraction ten times the pull, which wrecked f: SUN mAP 0.48 -> 0.26 on the planted world.)
        With a mask for every labelled row the share is 1 and the term is plain mask_loss."""
        if sun.masks is None or sun.masks_valid is None:
            raise ValueError("a SUN batch without masks reached the mask loss")
        if sun.masks.shape != out.maps.shape:
            raise ValueError(
                f"mask coverage {tuple(sun.masks.shape)} does not match the attribute maps {tuple(out.maps.shape)}; "
                "the masks must be pooled to the model's grid (model.grid) and attributes"
            )
        valid = sun.masks_valid & sun.attributes_mask[:, None]  # (B, K)
        labelled = int(sun.attributes_mask.sum())
        share = float(valid.any(1).sum()) / max(labelled, 1)  # masked share of the labelled rows
        return share * mask_loss(out.maps, sun.masks, valid, border=self.model.config.border)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        batches = _as_dict(batch)
        terms = self.compute_losses(batches)
        bad = {k: float(v.detach()) for k, v in terms.items() if not torch.isfinite(v.detach()).all()}
        if bad:
            raise NonFiniteError(
                f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}): {bad}; training stopped before the optimiser step, so no NaN "
                f"weights were applied or saved. Lower optim.lr, check the data, or use 32-true precision."
            )
        size = sum(len(b) for b in batches.values())
        for name, value in terms.items():
            self.log(f"train/{name}_loss" if name != "total" else "train/loss", value.detach(),
                     prog_bar=name == "total", batch_size=size, sync_dist=False)
        return terms["total"]

    def holds_backbone(self) -> bool:
        """Whether the backbone's weights are held in the current epoch: the first
        ``optim.head_warmup_epochs`` epochs of a stage that trains it."""
        return bool(self._parts.get("backbone")) and self.current_epoch < self.optim.head_warmup_epochs

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Head warm-up (``optim.head_warmup_epochs``): drop the backbone's gradients, so Adam skips
        its weights (no step, no moments) and only the heads move. Dropping them after backward,
        rather than switching ``requires_grad``, keeps every rank's DDP reducer consistent."""
        if self.holds_backbone():
            for p in self.model.backbone.parameters():
                p.grad = None

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step, then project the templates onto >= 0 (paper Sec. 3.2) and check the weights."""
        optimizer.step(closure=optimizer_closure)
        if isinstance(self.model, SIAM):
            self.model.project_()
        bad = _non_finite_params(self.model)
        if bad:
            raise NonFiniteError(
                f"non-finite weights after the optimiser step at global step {self.global_step} "
                f"(epoch {epoch}, batch {batch_idx}) in {bad[:5]}; training stopped and nothing was saved"
            )

    # --- validation -------------------------------------------------------------------------------

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate the SoN RMSE on rows with a score and SUN AP inputs on rows with labels."""
        for b in _as_dict(batch).values():
            with torch.no_grad():
                out = self.model(self._prepare(b.image))
            if bool(b.scores_mask.any()):
                self._check_targets(b)
                for t, metric in enumerate([self.val_rmse, *self.val_rmse_targets]):
                    keep = b.scores_mask[:, t]
                    if bool(keep.any()):
                        metric.update(out.scores[keep, t].float(), b.scores[keep, t].float())
            if isinstance(self.model, SIAM) and b.attributes is not None and bool(b.attributes_mask.any()):
                self.val_presence.update(out.presence[b.attributes_mask].float())
                self.val_labels.update(b.attributes[b.attributes_mask].float())

    def on_validation_epoch_end(self) -> None:
        rmse = [self.val_rmse, *self.val_rmse_targets]  # one per target
        if self.val_rmse.update_count:
            self.log("val/son_rmse", self.val_rmse.compute(), prog_bar=True)
        for name, metric in zip(self.model.targets, rmse):
            if len(rmse) > 1 and metric.update_count:
                self.log(f"val/son_rmse_{name}", metric.compute())
            metric.reset()
        if self.val_presence.update_count:
            from siam.evaluation.metrics import attribute_ap

            presence = self.val_presence.compute().reshape(-1, self.model.num_attributes)
            labels = self.val_labels.compute().reshape(-1, self.model.num_attributes)
            ap = attribute_ap(presence.cpu().numpy(), labels.cpu().numpy(), self.model.attributes)
            if not math.isnan(ap.mean_ap):
                self.log("val/sun_map", ap.mean_ap, prog_bar=True)
            self.val_presence.reset()
            self.val_labels.reset()

    # --- optimiser and checkpoints ----------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        o = self.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {self.stage!r} has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        if o.lr_schedule == "cosine":
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        if o.lr_decay_every <= 0 or o.lr_decay_gamma == 1.0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=o.lr_decay_every, gamma=o.lr_decay_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save NaN weights; add the siam meta (config, preprocessing, attribute names)."""
        bad = [k for k, v in checkpoint.get("state_dict", {}).items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteError(f"refusing to save a checkpoint with non-finite weights in {bad[:5]} (global step {self.global_step})")
        checkpoint["siam_meta"] = model_meta(self.model, train_config=self.train_config, trained_on=self.trained_on)
        checkpoint["siam_meta"]["stage"] = self.stage


RATIO_EPS = 1e-12  # keeps an adaptive weight finite when a loss is exactly 0


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with both detached: scales a term's gradient without adding one of its own."""
    return num.detach().float() / den.detach().float().clamp_min(RATIO_EPS)


def _as_dict(batch: Any) -> dict[str, Batch]:
    """Normalise what a loader yields into ``{"sun"|"son": Batch}``."""
    if isinstance(batch, Batch):
        return {"son" if bool(batch.scores_mask.any()) else "sun": batch}
    if isinstance(batch, (tuple, list)) and len(batch) == 3 and isinstance(batch[0], (dict, Batch)):
        batch = batch[0]  # CombinedLoader in some modes yields (batch, batch_idx, dataloader_idx)
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if v is not None}
    raise TypeError(f"expected a Batch or a dict of Batches, got {type(batch).__name__}")


def _non_finite_params(model: torch.nn.Module) -> list[str]:
    """Names of trained parameters holding NaN/inf (one fused max-abs check on the fast path)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or torch.isfinite(torch.nn.utils.get_total_norm(params, norm_type=math.inf)):
        return []
    return [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
