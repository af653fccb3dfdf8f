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
    ``targets``: the names of the T scores g predicts (one set of templates, w and b each); files
    written before several targets load as one target, ``("score",)``.
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
    targets: tuple[str, ...] = ("score",)

    def __post_init__(self) -> None:
        check_target_names(self.targets)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attributes"] = list(self.attributes)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        d = dict(d)
        d["attributes"] = tuple(d.get("attributes", ()))
        d["targets"] = tuple(d.get("targets", ("score",)))
        return cls(**d)


def check_target_names(names: object) -> tuple[str, ...]:
    """Validate target names: a non-empty sequence of distinct, non-empty strings."""
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise ValueError(f"targets must be a list of names, got {names!r}")
    if not names:
        raise ValueError("targets must name at least one target, got an empty list")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f"target names must be non-empty strings, got {bad!r} in {list(names)!r}")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise ValueError(f"target names must be distinct, got {dup} more than once in {list(names)!r}")
    return tuple(names)
