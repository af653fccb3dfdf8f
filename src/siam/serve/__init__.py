"""Web explorer and REST API for SIAM explanations (``siam serve``).

``create_app(model_or_checkpoint)`` builds the FastAPI app; see :mod:`siam.serve.app`. This
package never imports :mod:`siam.training`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from siam.serve.app import create_app


def __getattr__(name: str) -> Any:
    # Lazy, so that ``siam serve --help`` does not import FastAPI or torch.
    if name == "create_app":
        from siam.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'siam.serve' has no attribute {name!r}")
