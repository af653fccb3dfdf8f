"""Deprecated alias of :mod:`siam.synth` (the planted-world generator moved out of ``siam.data``,
which holds the readers). Kept for one release: importing it warns with a ``DeprecationWarning``,
and every name resolves to the very object of :mod:`siam.synth` (private helpers to
:mod:`siam.synth.world` or :mod:`siam.synth.cli`). Nothing in ``siam`` imports this module."""

from __future__ import annotations

import warnings
from typing import Any

import siam.synth as _synth
from siam.synth import *  # noqa: F403  (the public names, re-exported as they are)
from siam.synth import cli as _cli
from siam.synth import world as _world

__all__ = list(_synth.__all__)

warnings.warn(
    "siam.data.synthetic is deprecated and will be removed in the next release; import siam.synth "
    "(the generator) instead",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    """Any other name the old module had (constants, private helpers), from its new home."""
    for module in (_world, _cli):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} (see siam.synth)")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_world)) | set(dir(_cli)))
