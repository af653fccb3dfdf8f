"""Explanations (paper Sec. 3-4): per-image what-where-how, interventions, faithfulness, figures.

Compute first (:mod:`~siam.explain.explanation`, :mod:`~siam.explain.summary`,
:mod:`~siam.explain.faithfulness`), then draw (:mod:`~siam.explain.figures`, the only module that
imports matplotlib) and report (:mod:`~siam.explain.report`).
"""

import sys
import types
from typing import Any

from siam.explain.explanation import (
    BaselineResult,
    Explanation,
    Intervention,
    error_record,
    explain,
    explain_baseline,
    load_explanation,
    model_identity,
)

__all__ = ["Explanation", "Intervention", "BaselineResult", "explain", "explain_baseline", "error_record",
           "load_explanation", "model_identity", "quickstart_hook"]


class _ExplainModule(types.ModuleType):
    """``siam.explain`` is both this package and the entry point: once the package is imported,
    Python binds the name ``siam.explain`` to it, so calling it must still explain."""

    def __call__(self, *args: Any, **kwargs: Any) -> Explanation:
        return explain(*args, **kwargs)


def __getattr__(name: str) -> Any:
    # Lazy: the quickstart hook pulls in data loading and the report.
    if name == "quickstart_hook":
        from siam.explain.quickstart import quickstart_hook

        return quickstart_hook
    raise AttributeError(f"module 'siam.explain' has no attribute {name!r}")


sys.modules[__name__].__class__ = _ExplainModule
