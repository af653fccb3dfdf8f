"""Typed, frozen model configuration, saved inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

ModelKind = Literal["siam", "baseline"]
PresenceDenominator = Literal["centre", "grid"]
PresencePooling = Literal["mean", "lse"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (weights come separately).

    ``grid`` is the template size m; ``border`` the masked frame (cells) of each attribute map.
    ``presence_denominator``: the presence is tanh(sum of the map / n) with n the ``"centre"``
    cells ((m - 2 border)^2, the default) or the whole ``"grid"`` (m^2, as the authors' code,
    whose average pooling includes the zeroed border). Files without the key load as ``"centre"``.
    ``presence_pooling``: ``"mean"`` (the paper) or ``"lse"`` (log-sum-exp over the same cells with
    sharpness ``presence_lse_r``; not in the paper). Files without the keys load as ``"mean"``.
    """

    kind: ModelKind = "siam"
    backbone: str = "resnet50"
    attributes: tuple[str, ...] = ()
    grid: int = 15
    border: int = 2
    presence: Literal["tanh", "sigmoid"] = "tanh"
    presence_denominator: PresenceDenominator = "centre"
    presence_pooling: PresencePooling = "mean"
    presence_lse_r: float = 10.0
    template_init: float = 0.01
    predict_variance: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attributes"] = list(self.attributes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        d = dict(d)
        d["attributes"] = tuple(d.get("attributes", ()))
        return cls(**d)
