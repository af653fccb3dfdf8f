"""siam: Semantically Interpretable Activation Maps.

A SIAM model explains its score by construction: which predefined attributes it saw (*what*),
where in the image (*where*), and how much each added to or took from the score (*how much*).
Marcos, Lobry & Tuia, "Semantically Interpretable Activation Maps: what-where-how explanations
within CNNs", ICCV Workshops 2019.

Public API::

    model = siam.build_model(backbone="resnet50", pretrained="imagenet")
    out = model(images)          # siam.SIAMOutput: maps, presence, contributions, ...
    siam.load_checkpoint(path)   # SIAM or Baseline, with attribute names and preprocessing
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from siam.checkpoint import load_checkpoint, save_checkpoint
from siam.models import Baseline, BaselineOutput, SIAM, SIAMOutput, build_baseline, build_model
from siam.vocab import SUN33

__all__ = [
    "SIAM",
    "SIAMOutput",
    "Baseline",
    "BaselineOutput",
    "SUN33",
    "build_model",
    "build_baseline",
    "load_checkpoint",
    "save_checkpoint",
    "explain",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from siam.explain.explanation import explain


def __getattr__(name: str) -> Any:
    # Lazy: explanation code pulls in image decoding; keep `import siam` light.
    if name == "explain":
        from siam.explain.explanation import explain

        return explain
    raise AttributeError(f"module 'siam' has no attribute {name!r}")
